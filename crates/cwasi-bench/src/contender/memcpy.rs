//! `memcpy`: the physical limit. `send` copies the payload into B's warm
//! buffer; `fetch` copies B's buffer into A's.

use std::hint::black_box;
use std::sync::{Arc, Mutex};

use super::{lock, Contender, Kind, Parties, MAX_FAN};
use crate::BenchError;

/// One destination buffer per worker and one source buffer for `fetch`.
pub struct Memcpy {
    dst: Vec<Mutex<Vec<u8>>>,
    src: Mutex<Arc<[u8]>>,
}

impl Memcpy {
    /// Buffers are sized by `prepare`.
    pub fn new() -> Memcpy {
        Memcpy {
            dst: (0..MAX_FAN).map(|_| Mutex::new(Vec::new())).collect(),
            src: Mutex::new(Arc::from(Vec::new())),
        }
    }
}

impl Contender for Memcpy {
    fn kind(&self) -> Kind {
        Kind::Memcpy
    }

    fn prepare(&self, size: usize) -> Result<(), BenchError> {
        // Destinations are sized on first use (in the warm-up), so that only
        // the workers of this point hold memory.
        for d in &self.dst {
            *lock(d) = Vec::new();
        }
        *lock(&self.src) = Arc::from(vec![7u8; size]);
        Ok(())
    }

    fn send(&self, worker: usize, payload: &Arc<[u8]>) -> Result<(), BenchError> {
        let mut d = lock(&self.dst[worker]);
        if d.len() != payload.len() {
            d.resize(payload.len(), 1);
        }
        black_box(&mut d[..]).copy_from_slice(black_box(&payload[..]));
        Ok(())
    }

    fn fetch(&self, worker: usize, size: usize) -> Result<(), BenchError> {
        let src = lock(&self.src).clone();
        if src.len() != size {
            return Err(BenchError::op("memcpy", "fetch before prepare"));
        }
        self.send(worker, &src)
    }

    fn parties(&self) -> Parties {
        Parties::default()
    }
}
