//! Backbone features: the on-disk cache and batched computation.
