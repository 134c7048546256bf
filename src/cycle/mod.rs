//! The 60-day cycle: knowing when to retrain (its exit codes are in `crate::exit`).

pub mod calendar;
pub mod check;
pub mod deployed;
pub mod lock;
pub mod mine;
pub mod pipeline;
pub mod register;
pub mod retrain;
pub mod schedule;
pub mod signals;

pub use crate::exit;
