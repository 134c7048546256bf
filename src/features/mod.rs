//! Backbone features: the on-disk cache ([`cache`]) and batched computation plus the
//! `sv72 embed` output format ([`embed`]).

pub mod cache;
pub mod embed;
pub mod featurizer;

pub use cache::{backbone_key, CacheStats, FeatureCache, FeatureRow};
