//! Products eight weight rows at a time (Q5_0, Q8_0, Q4_K, Q6_K on AVX2), and
//! the weight layout they read.
//!
//! The row-at-a-time products (`kquants::avx2`) give each output as the sum of
//! a vector of partial sums, so every block of 32 costs a horizontal reduction.
//! Here the eight 32-bit lanes of a register belong to eight weight rows: a
//! sub-block of 32 weights of eight rows is unpacked with register `k` holding
//! weights `4k..4k + 4` of every row, and each activation block meets it with
//! four of its bytes broadcast per register. The lanes' integer sums are scaled
//! by the eight rows' scales at once and added to eight outputs, with no
//! reduction. Each output is a sum over its blocks in order, the same whichever
//! activation rows and weight rows come with it, so results stay bit-identical
//! across batch sizes.
//!
//! The K-quants' per-sub-block scales become vectors of eight rows' scales; Q6_K's
//! scales per 16 weights multiply the 16-bit sums of their halves.
//!
//! Weights the engine owns are regrouped once at load ([`repack`], see
//! `eight_rows/layout.rs`) so that this unpacking is a few loads, shifts and
//! masks, in as many bytes as GGUF's (Q4_K: 4 more per super-block, its packed
//! 6-bit scales stored as bytes). Q5_0 weights shared with a tensor someone else
//! still holds (a tied embedding) keep the GGUF layout and are transposed while
//! unpacking, with identical results; other shared weights use the
//! row-at-a-time products, and Q5_K always does.

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2;
mod layout;

pub(super) use layout::{regroupable, regrouped_len, repack, unpack_rows};
