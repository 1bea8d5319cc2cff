//! The certificate the bridge serves, swappable while it runs.
//!
//! rustls asks a [`ResolvesServerCert`] for the certificate at each
//! handshake; [`CertStore`] answers with whatever pair was put in last. A
//! swap changes what new handshakes get, while open connections keep the
//! keys they agreed on: a renewal cuts no session. Whoever swaps (the
//! watcher of `--tls-cert/--tls-key` files in [`crate::tls::reload`], or an
//! ACME client) checks the pair first: the store serves what it is given.

use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The certificate chain and key served to new handshakes.
#[derive(Debug)]
pub struct CertStore {
    // A read lock held only to clone an `Arc`: handshakes never wait on
    // each other, and a swap waits for no more than those clones.
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    /// A store serving `initial` until the first swap.
    pub fn new(initial: CertifiedKey) -> Self {
        Self {
            current: RwLock::new(Arc::new(initial)),
        }
    }

    /// Serves `pair` to every handshake from now on; returns the pair it
    /// replaces.
    pub fn swap(&self, pair: CertifiedKey) -> Arc<CertifiedKey> {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        std::mem::replace(&mut *current, Arc::new(pair))
    }

    /// The pair served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        // Nothing can panic while the lock is held (a swap only replaces
        // an `Arc`), so a poisoned lock still holds a whole pair.
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> CertifiedKey {
        let made = rcgen::generate_simple_self_signed(vec![String::from("localhost")]).unwrap();
        let pem = made.signing_key.serialize_pem();
        crate::tls::pair_from_pem(
            made.cert.pem().as_bytes(),
            pem.as_bytes(),
            std::path::Path::new("c"),
            std::path::Path::new("k"),
        )
        .unwrap()
    }

    #[test]
    fn a_swap_replaces_what_is_served_and_hands_back_the_old_pair() {
        let (first, second) = (pair(), pair());
        let (first_cert, second_cert) = (first.cert.clone(), second.cert.clone());
        let store = CertStore::new(first);
        let held = store.current();
        let old = store.swap(second);
        assert_eq!(old.cert, first_cert);
        assert_eq!(store.current().cert, second_cert);
        // Whoever held the old pair (a handshake under way) keeps it whole.
        assert_eq!(held.cert, first_cert);
    }
}
