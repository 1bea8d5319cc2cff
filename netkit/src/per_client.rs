//! Counting what each client address holds at once (connections,
//! sessions), so that no single address takes every place.
//!
//! A place is a [`Held`] guard: the count goes down when it is dropped,
//! however the connection or session ends, and an address whose count
//! reaches 0 leaves the table. The table therefore never has more entries
//! than places held, which the global limits (`--max-sessions`,
//! `--max-connections`) already bound.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};

/// The address a client is counted under: an IPv4 address as it is (an
/// IPv4-mapped IPv6 address as its IPv4 one), an IPv6 address by its /64,
/// since one host is routinely given a whole /64 and could otherwise count
/// as 2⁶⁴ clients.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(bits))
            }
        },
    }
}

/// Places held, by client address.
type Table = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// How many places each client address holds, at most `max` each (0: no
/// limit, and nothing is counted).
#[derive(Debug, Clone)]
pub struct PerClient {
    max: usize,
    held: Table,
}

impl PerClient {
    /// At most `max` places per address; 0 turns the limit off.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            held: Arc::default(),
        }
    }

    /// The limit per address (0: none).
    pub fn max(&self) -> usize {
        self.max
    }

    /// A place for `ip` (counted under [`client_key`]), held until the
    /// guard is dropped; `None` if that address holds `max` already. With
    /// the limit off, a guard that counts nothing.
    pub fn try_hold(&self, ip: IpAddr) -> Option<Held> {
        if self.max == 0 {
            return Some(Held::uncounted());
        }
        let key = client_key(ip);
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(key).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Held {
            place: Some((key, Arc::clone(&self.held))),
        })
    }

    /// Places `ip` holds now.
    pub fn held_by(&self, ip: IpAddr) -> usize {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.get(&client_key(ip)).copied().unwrap_or(0)
    }

    /// Addresses holding at least one place (the table's size).
    pub fn addresses(&self) -> usize {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// One place held by one address; given back on drop.
#[derive(Debug)]
pub struct Held {
    place: Option<(IpAddr, Table)>,
}

impl Held {
    /// A place that counts against nothing: for clients no limit applies
    /// to (a trusted proxy's own connections).
    pub fn uncounted() -> Self {
        Self { place: None }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some((key, table)) = self.place.take() else {
            return;
        };
        let mut held = table.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn each_address_has_its_own_places_and_leaves_the_table_at_zero() {
        let limit = PerClient::new(2);
        let a1 = limit.try_hold(ip("127.0.0.3")).unwrap();
        let a2 = limit.try_hold(ip("127.0.0.3")).unwrap();
        assert!(limit.try_hold(ip("127.0.0.3")).is_none());
        let b = limit.try_hold(ip("127.0.0.4")).unwrap();
        assert_eq!(limit.addresses(), 2);
        drop(a1);
        let a3 = limit.try_hold(ip("127.0.0.3")).unwrap();
        drop((a2, a3, b));
        assert_eq!(limit.addresses(), 0);
    }

    #[test]
    fn zero_counts_nothing() {
        let limit = PerClient::new(0);
        let held: Vec<_> = (0..1000)
            .map(|_| limit.try_hold(ip("127.0.0.3")).unwrap())
            .collect();
        assert_eq!(limit.addresses(), 0);
        drop(held);
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            client_key(ip("2001:db8::1")),
            client_key(ip("2001:db8::ffff:2"))
        );
        assert_ne!(
            client_key(ip("2001:db8::1")),
            client_key(ip("2001:db8:0:1::1"))
        );
        assert_eq!(client_key(ip("::ffff:127.0.0.3")), ip("127.0.0.3"));
    }
}
