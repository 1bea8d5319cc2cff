//! Which bridge the page talks to: its own origin's `/ws` by default, or the
//! one named by `?ws=ws://host:port/ws`.

/// The WebSocket URL for a page loaded over `protocol` (`"http:"` or
/// `"https:"`) from `host` (`"host:port"`), unless `requested` names one.
/// A requested URL must be `ws://` or `wss://`.
pub fn bridge_url(protocol: &str, host: &str, requested: Option<&str>) -> Result<String, String> {
    if let Some(url) = requested {
        let url = url.trim();
        return if url.starts_with("ws://") || url.starts_with("wss://") {
            Ok(url.to_string())
        } else {
            Err(format!(
                "?ws={url} no es una URL WebSocket: debe empezar por ws:// o wss://"
            ))
        };
    }
    let scheme = if protocol == "https:" { "wss" } else { "ws" };
    Ok(format!("{scheme}://{host}/ws"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_by_default() {
        assert_eq!(
            bridge_url("http:", "127.0.0.1:8080", None).unwrap(),
            "ws://127.0.0.1:8080/ws"
        );
        assert_eq!(
            bridge_url("https:", "demo.example", None).unwrap(),
            "wss://demo.example/ws"
        );
    }

    #[test]
    fn the_query_overrides() {
        let url = bridge_url("http:", "x", Some("ws://10.0.0.2:9000/ws")).unwrap();
        assert_eq!(url, "ws://10.0.0.2:9000/ws");
    }

    #[test]
    fn the_override_must_be_a_websocket_url() {
        assert!(bridge_url("http:", "x", Some("http://x/ws")).is_err());
        assert!(bridge_url("http:", "x", Some("")).is_err());
    }
}
