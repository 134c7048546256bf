//! `sv72 eval`: a checkpoint scored as validators score it (issue #4).
