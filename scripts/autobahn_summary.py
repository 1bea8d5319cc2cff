#!/usr/bin/env python3
"""Summary of an Autobahn|TestSuite fuzzingclient run (used by scripts/autobahn).

Reads the run's index.json and prints, for each agent and each section, how
many cases ended in each outcome (`behavior`, and `behaviorClose` for the
closing handshake); then every case where the agent under test does worse
than the baseline, with its description, result texts and the close code it
sent (from the case's own JSON report beside index.json).

Outcomes are ranked OK < NON-STRICT, INFORMATIONAL, UNIMPLEMENTED and
FAILED BY CLIENT (the testsuite's "preferred, not required" findings) <
FAILED, WRONG CODE, UNCLEAN (and anything else). A case is worse when either
its behavior or its behaviorClose ranks higher than the baseline's.

Exit status: 1 if a case of a strict section (2-7 by default) is worse for
the agent than for the baseline, or is missing for it; otherwise 0.

    scripts/autobahn_summary.py target/autobahn/reports/index.json \\
        --agent bridge --baseline tokio-tungstenite
"""

import argparse
import html
import json
import os
import re
import sys

BEHAVIORS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
CLOSES = ["OK", "INFORMATIONAL", "FAILED BY CLIENT", "WRONG CODE", "UNCLEAN", "FAILED"]
RANK = {
    "OK": 0,
    "NON-STRICT": 1,
    "INFORMATIONAL": 1,
    "UNIMPLEMENTED": 1,
    "FAILED BY CLIENT": 1,
}
WORST = 2


def rank(outcome):
    """0 for OK, 1 for the lenient outcomes, 2 for failures of any kind."""
    return RANK.get(outcome, WORST)


def case_key(case_id):
    """Sorts 1.1.10 after 1.1.9."""
    return tuple(int(part) if part.isdigit() else 0 for part in case_id.split("."))


def section(case_id):
    return case_id.split(".")[0]


def plain(text):
    """A report's text without its HTML, on one line."""
    text = re.sub(r"<[^>]*>", " ", str(text or ""))
    return " ".join(html.unescape(text).split())


def table(name, cases):
    """Per-section counts of each outcome, as aligned text lines."""
    sections = sorted({section(case) for case in cases}, key=int)
    behaviors = BEHAVIORS + sorted(
        {entry["behavior"] for entry in cases.values()} - set(BEHAVIORS)
    )
    closes = CLOSES + sorted(
        {entry["behaviorClose"] for entry in cases.values()} - set(CLOSES)
    )
    header = ["section", "cases"] + behaviors + ["|"] + closes
    rows = []
    for sec in sections + ["all"]:
        chosen = [
            entry for case, entry in cases.items() if sec == "all" or section(case) == sec
        ]
        row = [sec, str(len(chosen))]
        row += [str(sum(e["behavior"] == b for e in chosen)) for b in behaviors]
        row += ["|"]
        row += [str(sum(e["behaviorClose"] == c for e in chosen)) for c in closes]
        rows.append(row)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    bar = header.index("|")
    behavior_width = sum(widths[2:bar]) + 2 * (bar - 3)
    lines = [
        "%s (%d cases)" % (name, len(cases)),
        "  " + " " * (widths[0] + widths[1] + 4)
        + "behavior".center(behavior_width, "-") + "  |  "
        + "behaviorClose".center(sum(widths[bar + 1:]) + 2 * (len(widths) - bar - 2), "-"),
    ]
    for row in [header] + rows:
        cells = [
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths))
        ]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def case_report(index_dir, entry):
    """The case's own JSON report, or {} if it cannot be read."""
    try:
        with open(os.path.join(index_dir, entry["reportfile"]), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, KeyError, ValueError):
        return {}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index", help="the run's index.json")
    parser.add_argument("--agent", default="bridge", help="the agent under test")
    parser.add_argument("--baseline", default="tokio-tungstenite", help="the agent compared with")
    parser.add_argument(
        "--strict",
        default="2,3,4,5,6,7",
        help="sections where any worse case fails the run (default 2,3,4,5,6,7)",
    )
    args = parser.parse_args()
    strict = {s.strip() for s in args.strict.split(",") if s.strip()}

    with open(args.index, encoding="utf-8") as f:
        index = json.load(f)
    index_dir = os.path.dirname(os.path.abspath(args.index))
    for name in (args.agent, args.baseline):
        if name not in index:
            sys.exit("no agent %r in %s (it has: %s)" % (name, args.index, ", ".join(index)))
    mine, theirs = index[args.agent], index[args.baseline]

    print("Autobahn|TestSuite: %s against the baseline %s" % (args.agent, args.baseline))
    print()
    for name in (args.agent, args.baseline):
        print("\n".join(table(name, index[name])))
        print()

    worse = []
    for case in sorted(set(mine) | set(theirs), key=case_key):
        if case not in mine:
            worse.append((case, None, theirs[case]))
        elif case in theirs:
            a, b = mine[case], theirs[case]
            if rank(a["behavior"]) > rank(b["behavior"]) or rank(
                a["behaviorClose"]
            ) > rank(b["behaviorClose"]):
                worse.append((case, a, b))

    failing = [case for case, _, _ in worse if section(case) in strict]
    print(
        "Cases where %s does worse than %s: %d (%d in sections %s)"
        % (
            args.agent,
            args.baseline,
            len(worse),
            len(failing),
            ", ".join(sorted(strict, key=int)),
        )
    )
    # First grouped by what happened, then one by one.
    groups = {}
    for case, a, b in worse:
        if a is None:
            key = "missing for %s" % args.agent
        else:
            key = "%s / %s (baseline %s / %s), close code %s sent %s" % (
                a["behavior"],
                a["behaviorClose"],
                b["behavior"],
                b["behaviorClose"],
                args.agent,
                a.get("remoteCloseCode"),
            )
        groups.setdefault(key, []).append(case)
    for key, cases in groups.items():
        print("  %s: %s" % (key, ", ".join(cases)))
    for case, a, b in worse:
        print()
        if a is None:
            print("%s  missing for %s" % (case, args.agent))
            continue
        report = case_report(index_dir, a)
        first = "wstest" if report.get("closedByMe") else args.agent
        print(
            "%s  behavior %s (baseline %s); close %s (baseline %s); "
            "close code %s sent: %s (baseline: %s); %s closed first"
            % (
                case,
                a["behavior"],
                b["behavior"],
                a["behaviorClose"],
                b["behaviorClose"],
                args.agent,
                a.get("remoteCloseCode"),
                b.get("remoteCloseCode"),
                first,
            )
        )
        print("    case:     %s" % plain(report.get("description")))
        print("    expected: %s" % plain(report.get("expectation")))
        print("    result:   %s" % plain(report.get("result")))
        print("    close:    %s" % plain(report.get("resultClose")))
        reason = plain(report.get("remoteCloseReason"))
        if reason:
            print("    reason:   %s" % reason)
        if report.get("wasClean") is False:
            print("    unclean:  %s" % plain(report.get("wasNotCleanReason")))

    print()
    if failing:
        print("FAIL: %s does worse than %s in %s" % (args.agent, args.baseline, ", ".join(failing)))
        return 1
    print("OK: in sections %s, %s does no worse than %s" % (
        ", ".join(sorted(strict, key=int)), args.agent, args.baseline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
