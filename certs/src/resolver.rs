//! A serving certificate that can be replaced in memory: the HTTPS server asks it for the
//! certificate on every handshake, so a rotation takes effect on the next connection, with no
//! restart and no wait for a mounted volume to update.

use std::sync::{Arc, RwLock};

use rustls::crypto::ring::sign::any_supported_type;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use crate::inspect::certificates;
use crate::{CertKeyPair, Error};

/// Builds what rustls serves from a PEM pair (the chain is the leaf alone: clients hold the CA).
pub fn certified_key(pair: &CertKeyPair) -> Result<Arc<CertifiedKey>, Error> {
    let chain = certificates(&pair.cert_pem, "serving certificate")?;
    let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes())
        .map_err(|_| Error::BadKey { what: "serving key".into() })?;
    let signing =
        any_supported_type(&key).map_err(|_| Error::BadKey { what: "serving key".into() })?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

/// The certificate currently served.
#[derive(Debug)]
pub struct ReloadableCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableCert {
    pub fn new(initial: Arc<CertifiedKey>) -> Self {
        Self { current: RwLock::new(initial) }
    }

    /// Serves `next` from the next handshake on; connections already open keep theirs.
    pub fn swap(&self, next: Arc<CertifiedKey>) {
        // A poisoned lock only means a panic elsewhere while swapping an Arc; the value is whole.
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = next;
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}
