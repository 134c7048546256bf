//! SCALE decoding of the subtensor runtime answers sv72 reads (`NeuronInfoLite`,
//! `SubnetState`), checked byte for byte so a changed runtime layout is an error, not garbage.

use anyhow::{anyhow, bail, Context, Result};

/// A cursor over SCALE-encoded bytes; every read names what it reads so a short or malformed
/// payload says where it broke.
pub struct ScaleReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> ScaleReader<'a> {
    /// Starts at the first byte of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if self.remaining() < n {
            bail!(
                "truncated SCALE payload: `{what}` at byte {} needs {n} byte(s) but only {} of {} \
                 are left",
                self.pos,
                self.remaining(),
                self.buf.len()
            );
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    /// A fixed-width `u8`.
    pub fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    /// A fixed-width little-endian `u16`.
    pub fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    /// A fixed-width little-endian `u32`.
    pub fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    /// A fixed-width little-endian `u64`.
    pub fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A fixed-width little-endian `u128`.
    pub fn u128(&mut self, what: &str) -> Result<u128> {
        Ok(u128::from_le_bytes(self.array(what)?))
    }

    /// A `bool`: one byte, 0 or 1.
    pub fn bool(&mut self, what: &str) -> Result<bool> {
        let at = self.pos;
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            b => bail!("malformed SCALE payload: `{what}` at byte {at} is {b:#04x}, not a bool"),
        }
    }

    /// A 32-byte `AccountId32`.
    pub fn account(&mut self, what: &str) -> Result<[u8; 32]> {
        self.array(what)
    }

    /// A `Compact<uN>` of any width (up to `u128`).
    pub fn compact(&mut self, what: &str) -> Result<u128> {
        let at = self.pos;
        let first = self.u8(what)?;
        let v = match first & 0b11 {
            0b00 => (first >> 2) as u128,
            0b01 => (u16::from_le_bytes([first, self.u8(what)?]) >> 2) as u128,
            0b10 => {
                let rest: [u8; 3] = self.array(what)?;
                (u32::from_le_bytes([first, rest[0], rest[1], rest[2]]) >> 2) as u128
            }
            _ => {
                // Big-integer mode: the upper six bits say how many bytes follow, minus four.
                let n = (first >> 2) as usize + 4;
                if n > 16 {
                    bail!(
                        "malformed SCALE payload: `{what}` at byte {at} is a {n}-byte compact \
                         integer; at most 16 bytes (u128) are supported"
                    );
                }
                let bytes = self.take(n, what)?;
                let mut le = [0u8; 16];
                le[..n].copy_from_slice(bytes);
                u128::from_le_bytes(le)
            }
        };
        Ok(v)
    }

    /// A `Compact<u16>`.
    pub fn compact_u16(&mut self, what: &str) -> Result<u16> {
        let at = self.pos;
        let v = self.compact(what)?;
        u16::try_from(v).map_err(|_| {
            anyhow!("malformed SCALE payload: `{what}` at byte {at} is {v}, too large for a u16")
        })
    }

    /// A `Compact<u64>`.
    pub fn compact_u64(&mut self, what: &str) -> Result<u64> {
        let at = self.pos;
        let v = self.compact(what)?;
        u64::try_from(v).map_err(|_| {
            anyhow!("malformed SCALE payload: `{what}` at byte {at} is {v}, too large for a u64")
        })
    }

    /// The compact length prefix of a `Vec`, checked against the bytes left (each item takes at
    /// least `min_item_bytes`) so garbage cannot ask for a huge allocation.
    pub fn vec_len(&mut self, what: &str, min_item_bytes: usize) -> Result<usize> {
        let at = self.pos;
        let n = self.compact(what)?;
        let fits = usize::try_from(n)
            .ok()
            .filter(|&n| n.saturating_mul(min_item_bytes.max(1)) <= self.remaining());
        fits.ok_or_else(|| {
            anyhow!(
                "truncated SCALE payload: `{what}` at byte {at} announces {n} item(s) but only \
                 {} byte(s) are left",
                self.remaining()
            )
        })
    }

    /// A `Vec<T>` read item by item with `f`.
    pub fn vec<T>(
        &mut self,
        what: &str,
        min_item_bytes: usize,
        mut f: impl FnMut(&mut Self) -> Result<T>,
    ) -> Result<Vec<T>> {
        let n = self.vec_len(what, min_item_bytes)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(f(self)?);
        }
        Ok(out)
    }

    /// Fails unless every byte was read.
    pub fn finish(&self, what: &str) -> Result<()> {
        if self.remaining() != 0 {
            bail!(
                "malformed SCALE payload: {} unread byte(s) after {what} (payload has {} bytes); \
                 the node's runtime may use a newer layout",
                self.remaining(),
                self.buf.len()
            );
        }
        Ok(())
    }
}

/// `AxonInfo` of the subtensor pallet (fixed-width fields).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AxonInfo {
    pub block: u64,
    pub version: u32,
    pub ip: u128,
    pub port: u16,
    pub ip_type: u8,
    pub protocol: u8,
    pub placeholder1: u8,
    pub placeholder2: u8,
}

impl AxonInfo {
    fn decode(r: &mut ScaleReader) -> Result<Self> {
        Ok(Self {
            block: r.u64("axon_info.block")?,
            version: r.u32("axon_info.version")?,
            ip: r.u128("axon_info.ip")?,
            port: r.u16("axon_info.port")?,
            ip_type: r.u8("axon_info.ip_type")?,
            protocol: r.u8("axon_info.protocol")?,
            placeholder1: r.u8("axon_info.placeholder1")?,
            placeholder2: r.u8("axon_info.placeholder2")?,
        })
    }
}

/// `PrometheusInfo` of the subtensor pallet (fixed-width fields).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrometheusInfo {
    pub block: u64,
    pub version: u32,
    pub ip: u128,
    pub port: u16,
    pub ip_type: u8,
}

impl PrometheusInfo {
    fn decode(r: &mut ScaleReader) -> Result<Self> {
        Ok(Self {
            block: r.u64("prometheus_info.block")?,
            version: r.u32("prometheus_info.version")?,
            ip: r.u128("prometheus_info.ip")?,
            port: r.u16("prometheus_info.port")?,
            ip_type: r.u8("prometheus_info.ip_type")?,
        })
    }
}

/// `NeuronInfoLite<AccountId32>` as the runtime encodes it (field order of
/// `pallets/subtensor/src/rpc_info/neuron_info.rs`). Balances are in rao.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeuronInfoLite {
    pub hotkey: [u8; 32],
    pub coldkey: [u8; 32],
    pub uid: u16,
    pub netuid: u16,
    pub active: bool,
    pub axon_info: AxonInfo,
    pub prometheus_info: PrometheusInfo,
    /// `(coldkey, alpha stake)` pairs; bittensor sums them into `NeuronInfoLite.stake`.
    pub stake: Vec<([u8; 32], u64)>,
    pub rank: u16,
    pub emission: u64,
    pub incentive: u16,
    pub consensus: u16,
    pub trust: u16,
    pub validator_trust: u16,
    pub dividends: u16,
    pub last_update: u64,
    pub validator_permit: bool,
    pub pruning_score: u16,
}

impl NeuronInfoLite {
    /// Decodes one neuron at the reader's position.
    pub fn decode(r: &mut ScaleReader) -> Result<Self> {
        Ok(Self {
            hotkey: r.account("hotkey")?,
            coldkey: r.account("coldkey")?,
            uid: r.compact_u16("uid")?,
            netuid: r.compact_u16("netuid")?,
            active: r.bool("active")?,
            axon_info: AxonInfo::decode(r)?,
            prometheus_info: PrometheusInfo::decode(r)?,
            stake: r.vec("stake", 33, |r| {
                Ok((r.account("stake.coldkey")?, r.compact_u64("stake.amount")?))
            })?,
            rank: r.compact_u16("rank")?,
            emission: r.compact_u64("emission")?,
            incentive: r.compact_u16("incentive")?,
            consensus: r.compact_u16("consensus")?,
            trust: r.compact_u16("trust")?,
            validator_trust: r.compact_u16("validator_trust")?,
            dividends: r.compact_u16("dividends")?,
            last_update: r.compact_u64("last_update")?,
            validator_permit: r.bool("validator_permit")?,
            pruning_score: r.compact_u16("pruning_score")?,
        })
    }

    /// The lite info's stake: the sum of its `(coldkey, amount)` list, in rao.
    pub fn alpha_stake_rao(&self) -> u128 {
        self.stake.iter().map(|(_, a)| *a as u128).sum()
    }
}

/// Decodes the answer of `get_neurons_lite`: `Vec<NeuronInfoLite<AccountId32>>`, all bytes used.
pub fn decode_neurons_lite(bytes: &[u8]) -> Result<Vec<NeuronInfoLite>> {
    let mut r = ScaleReader::new(bytes);
    // Keys 64, uid/netuid/active 3, axon 34, prometheus 31, nine compacts, stake length and
    // permit 11: the smallest possible neuron.
    let n = r.vec_len("Vec<NeuronInfoLite> length", 143)?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let start = r.position();
        let neuron = NeuronInfoLite::decode(&mut r)
            .with_context(|| format!("neuron #{i} of {n} (starting at byte {start})"))?;
        out.push(neuron);
    }
    r.finish("the neuron list")?;
    Ok(out)
}

/// `SubnetState<AccountId32>` (`pallets/subtensor/src/rpc_info/show_subnet.rs`): per-uid vectors,
/// balances in rao.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubnetState {
    pub netuid: u16,
    pub hotkeys: Vec<[u8; 32]>,
    pub coldkeys: Vec<[u8; 32]>,
    pub active: Vec<bool>,
    pub validator_permit: Vec<bool>,
    pub pruning_score: Vec<u16>,
    pub last_update: Vec<u64>,
    pub emission: Vec<u64>,
    pub dividends: Vec<u16>,
    pub incentives: Vec<u16>,
    pub consensus: Vec<u16>,
    pub trust: Vec<u16>,
    pub rank: Vec<u16>,
    pub block_at_registration: Vec<u64>,
    pub alpha_stake: Vec<u64>,
    pub tao_stake: Vec<u64>,
    /// What bittensor's `metagraph.S` reports (alpha + root TAO × tao weight).
    pub total_stake: Vec<u64>,
    pub emission_history: Vec<Vec<u64>>,
}

/// Decodes the answer of `get_subnet_state`: `Option<SubnetState<AccountId32>>`.
pub fn decode_subnet_state(bytes: &[u8]) -> Result<Option<SubnetState>> {
    let mut r = ScaleReader::new(bytes);
    let at = r.position();
    let state = match r.u8("Option<SubnetState> tag")? {
        0 => None,
        1 => {
            let u16s = |r: &mut ScaleReader, what: &str| r.vec(what, 1, |r| r.compact_u16(what));
            let u64s = |r: &mut ScaleReader, what: &str| r.vec(what, 1, |r| r.compact_u64(what));
            let bools = |r: &mut ScaleReader, what: &str| r.vec(what, 1, |r| r.bool(what));
            let accounts = |r: &mut ScaleReader, what: &str| r.vec(what, 32, |r| r.account(what));
            Some(SubnetState {
                netuid: r.compact_u16("netuid")?,
                hotkeys: accounts(&mut r, "hotkeys")?,
                coldkeys: accounts(&mut r, "coldkeys")?,
                active: bools(&mut r, "active")?,
                validator_permit: bools(&mut r, "validator_permit")?,
                pruning_score: u16s(&mut r, "pruning_score")?,
                last_update: u64s(&mut r, "last_update")?,
                emission: u64s(&mut r, "emission")?,
                dividends: u16s(&mut r, "dividends")?,
                incentives: u16s(&mut r, "incentives")?,
                consensus: u16s(&mut r, "consensus")?,
                trust: u16s(&mut r, "trust")?,
                rank: u16s(&mut r, "rank")?,
                block_at_registration: u64s(&mut r, "block_at_registration")?,
                alpha_stake: u64s(&mut r, "alpha_stake")?,
                tao_stake: u64s(&mut r, "tao_stake")?,
                total_stake: u64s(&mut r, "total_stake")?,
                emission_history: r
                    .vec("emission_history", 1, |r| u64s(r, "emission_history item"))?,
            })
        }
        b => bail!("malformed SCALE payload: Option tag at byte {at} is {b:#04x}, not 0 or 1"),
    };
    r.finish("the subnet state")?;
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_spec_vectors() {
        // Examples from the SCALE codec specification.
        let cases: &[(&[u8], u128)] = &[
            (&[0x00], 0),
            (&[0x04], 1),
            (&[0xa8], 42),
            (&[0xfc], 63),
            (&[0x01, 0x01], 64),
            (&[0x15, 0x01], 69),
            (&[0xfd, 0xff], 16383),
            (&[0x02, 0x00, 0x01, 0x00], 16384),
            (&[0xfe, 0xff, 0xff, 0xff], (1 << 30) - 1),
            (&[0x03, 0x00, 0x00, 0x00, 0x40], 1 << 30),
            (
                &[0x13, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                u64::MAX as u128,
            ),
        ];
        for (bytes, want) in cases {
            let mut r = ScaleReader::new(bytes);
            assert_eq!(r.compact("x").unwrap(), *want, "{bytes:02x?}");
            assert_eq!(r.remaining(), 0);
        }
        let e = ScaleReader::new(&[0x13, 0xff])
            .compact("stake")
            .unwrap_err();
        assert!(format!("{e}").contains("truncated") && format!("{e}").contains("stake"));
        let e = ScaleReader::new(&[0x02, 0x00, 0x04, 0x00])
            .compact_u16("uid")
            .unwrap_err();
        assert!(format!("{e}").contains("too large for a u16"), "{e}");
    }

    #[test]
    fn bools_and_vec_lengths_are_checked() {
        let e = ScaleReader::new(&[2]).bool("active").unwrap_err();
        assert!(format!("{e}").contains("not a bool"), "{e}");
        // 1000 items announced, 3 bytes left.
        let e = ScaleReader::new(&[0xa1, 0x0f, 1, 2, 3])
            .vec_len("stake", 1)
            .unwrap_err();
        assert!(format!("{e}").contains("announces 1000"), "{e}");
    }
}
