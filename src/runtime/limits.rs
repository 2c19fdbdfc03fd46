//! Per-shard admission of client connections by source address: a single
//! host (a buggy client pool, a scanner) cannot take all of a shard's
//! `connections_max` slots; past `connections_per_address_max` its new
//! connections are answered with a clear error and closed, while other
//! hosts keep being served. Slots are released by dropping the [`Admission`].

use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;

use ahash::AHashMap;

/// Open connections per source address on one shard.
#[derive(Default)]
pub(crate) struct AddressLimiter {
    open: RefCell<AHashMap<IpAddr, usize>>,
}

/// One admitted connection; dropping it frees its slot.
pub(crate) struct Admission {
    limiter: Rc<AddressLimiter>,
    address: IpAddr,
}

impl AddressLimiter {
    /// Admits a connection from `address` unless it already holds `max`.
    pub(crate) fn admit(self: &Rc<Self>, address: IpAddr, max: usize) -> Option<Admission> {
        let mut open = self.open.borrow_mut();
        let count = open.entry(address).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Admission {
            limiter: self.clone(),
            address,
        })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut open = self.limiter.open.borrow_mut();
        if let Some(count) = open.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_at_most_max_slots_and_dropping_frees_one() {
        let limiter = Rc::new(AddressLimiter::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = limiter.admit(a, 2).expect("first");
        let _second = limiter.admit(a, 2).expect("second");
        assert!(limiter.admit(a, 2).is_none(), "third from the same address");
        let _other = limiter.admit(b, 2).expect("another address is unaffected");
        drop(first);
        assert!(limiter.admit(a, 2).is_some(), "a freed slot is reusable");
        assert_eq!(limiter.open.borrow().len(), 2);
    }
}
