//! What a bench offers around a real device, apart from the kinds of device themselves
//! (`crate::device`): its health before a run ([`health`]).

pub mod health;
