//! Throughput of the uppercase stream transform, beside its ceilings:
//! `str::to_uppercase` on the same text (whole, valid) and a plain copy of
//! the same bytes. Each input is 4 MiB fed in 64 KiB chunks, as a busy
//! connection would feed it.
//!
//! `cargo bench -p upcase --bench upcase`; see BENCHMARKS.md.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use upcase::Upcase;

const SIZE: usize = 4 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

/// `pattern` repeated to `SIZE` bytes, cut on a character boundary.
fn repeated(pattern: &str) -> Vec<u8> {
    let mut text = pattern.repeat(SIZE / pattern.len() + 1);
    let mut end = SIZE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.into_bytes()
}

fn inputs() -> Vec<(&'static str, Vec<u8>)> {
    let spanish = "El presente y el futuro están basados en las redes: un socket \
                   es el punto final de una conexión, y el servidor responde cada \
                   mensaje en mayúsculas. ¿Qué ocurre si el cliente envía «ñandú» \
                   o «camión»? Que la respuesta llega entera, sin perder ningún byte. ";
    let with_invalid: Vec<u8> = repeated(spanish)
        .chunks(100)
        .flat_map(|piece| piece.iter().copied().chain([0xFF]))
        .take(SIZE)
        .collect();
    vec![
        ("ascii", repeated("the quick brown fox jumps over the lazy dog, 0123456789. ")),
        ("spanish", repeated(spanish)),
        (
            "greek_cyrillic",
            repeated("Η γρήγορη καφέ αλεπού πηδά πάνω από τον τεμπέλη σκύλο. Съешь же ещё этих мягких французских булок. "),
        ),
        ("cjk", repeated("我能吞下玻璃而不伤身体。私はガラスを食べられます。나는 유리를 먹을 수 있어요. ")),
        ("invalid_bytes", with_invalid),
    ]
}

fn transform(c: &mut Criterion) {
    for (name, input) in inputs() {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.sample_size(20);

        let mut out = Vec::with_capacity(3 * CHUNK + 3);
        group.bench_function(BenchmarkId::new("upcase_stream", name), |b| {
            b.iter(|| {
                let mut transform = Upcase::new();
                let mut total = 0;
                for chunk in input.chunks(CHUNK) {
                    out.clear();
                    transform.feed(black_box(chunk), &mut out);
                    total += out.len();
                }
                out.clear();
                transform.finish(&mut out);
                total + out.len()
            })
        });

        // The ceiling for case mapping: std on the whole text, already valid
        // (invalid bytes replaced beforehand, outside the timing).
        let text = String::from_utf8_lossy(&input).into_owned();
        group.bench_function(BenchmarkId::new("str_to_uppercase", name), |b| {
            b.iter(|| black_box(&text).to_uppercase().len())
        });

        // The ceiling of all: moving the same bytes, chunk by chunk.
        group.bench_function(BenchmarkId::new("copy", name), |b| {
            b.iter(|| {
                let mut total = 0;
                for chunk in input.chunks(CHUNK) {
                    out.clear();
                    out.extend_from_slice(black_box(chunk));
                    total += out.len();
                }
                total
            })
        });
        group.finish();
    }
}

criterion_group!(benches, transform);
criterion_main!(benches);
