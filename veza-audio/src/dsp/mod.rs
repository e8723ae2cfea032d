//! Signal processing between decoder and encoder: resampling, channel conversion, effects.

pub mod channels;
pub mod effects;
pub mod resample;
