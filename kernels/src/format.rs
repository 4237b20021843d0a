//! The GGUF weight formats the quantised products read.

/// A GGUF block format with a quantised product kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// 256-weight super-blocks: 4-bit weights, 6-bit scales and minimums per 32.
    Q4K,
    /// 32-weight blocks: 5-bit weights, one f16 scale.
    Q5_0,
    /// 256-weight super-blocks: 6-bit weights, 8-bit scales per 16.
    Q6K,
    /// 32-weight blocks: 8-bit weights, one f16 scale.
    Q8_0,
}

impl Format {
    /// All formats, in the order of their numbers.
    pub const ALL: [Format; 4] = [Format::Q4K, Format::Q5_0, Format::Q6K, Format::Q8_0];

    /// The number the CUDA sources use (`SF_Q4K` …).
    pub fn number(self) -> i32 {
        match self {
            Self::Q4K => 0,
            Self::Q5_0 => 1,
            Self::Q6K => 2,
            Self::Q8_0 => 3,
        }
    }

    /// Short lower-case name, as in kernel names (`q4k`, `q5_0`, `q6k`, `q8_0`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Q4K => "q4k",
            Self::Q5_0 => "q5_0",
            Self::Q6K => "q6k",
            Self::Q8_0 => "q8_0",
        }
    }

    /// Weights per block.
    pub fn block_values(self) -> usize {
        match self {
            Self::Q4K | Self::Q6K => 256,
            Self::Q5_0 | Self::Q8_0 => 32,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::Q4K => 144,
            Self::Q5_0 => 22,
            Self::Q6K => 210,
            Self::Q8_0 => 34,
        }
    }

    /// Bytes of one weight row of `in_features` weights.
    pub fn row_bytes(self, in_features: usize) -> usize {
        in_features / self.block_values() * self.block_bytes()
    }
}
