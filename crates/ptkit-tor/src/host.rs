//! Host side: launch a managed PT binary as tor does, and use it.
