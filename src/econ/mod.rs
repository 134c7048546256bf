//! `sv72 econ`: what mining a subnet earns, from the chain, against the miner's own costs.
//!
//! Earnings are each UID's `Emission` (alpha per epoch, as the last epoch paid it) scaled to a
//! day; miners are the UIDs that earn no dividends, ranked by that emission. Alpha is valued at
//! the pool's swap price (`chain::subnet`), TAO at a price from outside the chain ([`price`]).
//! [`compute`] is pure arithmetic on a [`SubnetRead`]; [`report`] writes it out.

pub mod price;
pub mod report;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::chain::{fetch_raw, RawSubnetRead, ReadOptions, SubnetRead};
use crate::config::EconConfig;
use crate::keys::{ss58_encode, SS58_FORMAT};
use crate::util::fsx;
pub use price::{fetch_tao_usd, TaoUsd};

/// Subtensor's target block time.
pub const BLOCK_SECONDS: f64 = 12.0;
/// A month, for monthly figures.
pub const DAYS_PER_MONTH: f64 = 365.0 / 12.0;
/// The rank tiers reported, as top-percent of miners.
pub const TIERS: [f64; 5] = [1.0, 5.0, 10.0, 25.0, 50.0];
/// Alpha price multipliers of the sensitivity table.
pub const SENSITIVITY: [f64; 5] = [0.5, 0.75, 1.0, 1.25, 1.5];
/// Snapshot file format tag.
pub const SNAPSHOT_FORMAT: &str = "sv72-econ-snapshot/1";

const RAO: f64 = 1e9;

/// The miner's costs, in USD.
#[derive(Debug, Clone, PartialEq)]
pub struct Costs {
    pub cycle_days: f64,
    pub serving_usd_per_hour: f64,
    pub training_hours_per_cycle: f64,
    pub training_usd_per_hour: f64,
    pub images_per_cycle: f64,
    pub generation_usd_per_image: f64,
    pub storage_usd_per_month: f64,
    pub registration_days: f64,
}

impl From<&EconConfig> for Costs {
    fn from(c: &EconConfig) -> Self {
        Self {
            cycle_days: c.cycle_days,
            serving_usd_per_hour: c.serving_usd_per_hour,
            training_hours_per_cycle: c.training_hours_per_cycle,
            training_usd_per_hour: c.training_usd_per_hour,
            images_per_cycle: c.images_per_cycle,
            generation_usd_per_image: c.generation_usd_per_image,
            storage_usd_per_month: c.storage_usd_per_month,
            registration_days: c.registration_days,
        }
    }
}

/// Costs per day in USD, by item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostsPerDay {
    pub serving: f64,
    pub training: f64,
    pub generation: f64,
    pub storage: f64,
    /// The registration burn spread over `registration_days`.
    pub registration: f64,
    pub total: f64,
}

impl Costs {
    /// Per-day costs with the registration burn `burn_usd`.
    pub fn per_day(&self, burn_usd: f64) -> CostsPerDay {
        let serving = self.serving_usd_per_hour * 24.0;
        let training = self.training_hours_per_cycle * self.training_usd_per_hour / self.cycle_days;
        let generation = self.images_per_cycle * self.generation_usd_per_image / self.cycle_days;
        let storage = self.storage_usd_per_month / DAYS_PER_MONTH;
        let registration = burn_usd / self.registration_days;
        CostsPerDay {
            serving,
            training,
            generation,
            storage,
            registration,
            total: serving + training + generation + storage + registration,
        }
    }
}

/// A UID or hotkey to report on besides the tiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Uid(u16),
    Hotkey(String),
}

/// One UID's earnings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Earner {
    pub uid: u16,
    pub hotkey: String,
    /// `miner` or `validator` (earns dividends).
    pub role: String,
    /// Place among miners by emission (1 = most); `None` for a validator.
    pub rank: Option<usize>,
    pub incentive: f64,
    pub alpha_per_epoch: f64,
    pub alpha_day: f64,
    pub tao_day: f64,
    pub usd_day: f64,
    pub usd_month: f64,
    pub net_usd_day: f64,
    pub net_usd_month: f64,
}

/// The miner at the edge of a top-percent tier.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tier {
    pub top_percent: f64,
    #[serde(flatten)]
    pub earner: Earner,
}

/// Break-even and tier nets at one alpha price.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sensitivity {
    pub factor: f64,
    pub alpha_tao: f64,
    /// Worst rank that still pays (0 = none does).
    pub break_even_rank: usize,
    /// Net USD per day at each of [`TIERS`].
    pub tier_net_usd_day: Vec<f64>,
}

/// Prices the report uses.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prices {
    /// TAO per alpha.
    pub alpha_tao: f64,
    /// `swap` (`SwapRuntimeApi_current_alpha_price`) or `reserve ratio`.
    pub alpha_source: String,
    /// The pool's `tao_in / alpha_in` and the chain's moving price, for comparison.
    pub reserve_ratio_tao: f64,
    pub moving_price_tao: f64,
    pub tao_usd: TaoUsd,
    pub alpha_usd: f64,
}

/// Everything `sv72 econ` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub netuid: u16,
    pub subnet_name: String,
    pub block: u64,
    pub block_hash: String,
    pub endpoint: String,
    pub read_at: DateTime<Utc>,
    pub tempo: u16,
    pub epochs_per_day: f64,
    pub prices: Prices,
    pub tao_in: f64,
    pub alpha_in: f64,
    pub alpha_out: f64,
    /// Alpha minted per block for the subnet's UIDs and owner (`alpha_out_emission`).
    pub alpha_minted_per_day: f64,
    /// What the UIDs were paid in the last epoch, summed, scaled to a day.
    pub alpha_paid_per_day: f64,
    pub miners_alpha_per_day: f64,
    pub registration_burn_tao: f64,
    pub registration_burn_usd: f64,
    pub immunity_days: f64,
    pub uids: usize,
    pub max_uids: u16,
    pub miners: usize,
    pub earning_miners: usize,
    pub validators: usize,
    pub costs_per_day: CostsPerDay,
    pub costs_per_month: f64,
    pub tiers: Vec<Tier>,
    pub target: Option<Earner>,
    /// Worst rank whose earnings cover the costs (0 = none).
    pub break_even_rank: usize,
    pub sensitivity: Vec<Sensitivity>,
    /// Miner USD per day by rank (index 0 = rank 1), for the plot.
    pub miners_usd_day: Vec<f64>,
    pub verdict: String,
    pub assumptions: Vec<String>,
}

/// Epochs a day: an epoch runs every `tempo + 1` blocks.
pub fn epochs_per_day(tempo: u16) -> f64 {
    86_400.0 / BLOCK_SECONDS / (tempo as f64 + 1.0)
}

/// The rank at the edge of the top `percent` of `n` miners.
pub fn tier_rank(percent: f64, n: usize) -> usize {
    ((percent / 100.0 * n as f64).ceil() as usize).clamp(1, n.max(1))
}

/// Prices alpha from what was read: the swap price, or the reserve ratio without one.
pub fn prices(read: &SubnetRead, tao_usd: TaoUsd) -> Result<Prices> {
    let d = &read.dynamic;
    let reserve_ratio_tao = if d.alpha_in == 0 {
        0.0
    } else {
        d.tao_in as f64 / d.alpha_in as f64
    };
    let (alpha_tao, alpha_source) = match read.swap_price_rao {
        Some(p) => (p as f64 / RAO, "swap".to_string()),
        None => (reserve_ratio_tao, "reserve ratio".to_string()),
    };
    if !(alpha_tao.is_finite() && alpha_tao > 0.0) {
        bail!(
            "netuid {} at block {}: the alpha price is 0 (tao_in {} rao, alpha_in {} rao); \
             nothing to value earnings at",
            read.netuid,
            read.block,
            d.tao_in,
            d.alpha_in
        );
    }
    let alpha_usd = alpha_tao * tao_usd.usd;
    Ok(Prices {
        alpha_tao,
        alpha_source,
        reserve_ratio_tao,
        moving_price_tao: d.moving_price(),
        tao_usd,
        alpha_usd,
    })
}

/// The report for `read` at `prices`, `costs` and optionally one `target` UID or hotkey.
pub fn compute(
    read: &SubnetRead,
    prices: Prices,
    costs: &Costs,
    target: Option<&Target>,
) -> Result<Report> {
    let epd = epochs_per_day(read.dynamic.tempo);
    let burn_tao = read.info.burn as f64 / RAO;
    let burn_usd = burn_tao * prices.tao_usd.usd;
    let cpd = costs.per_day(burn_usd);

    // Miners by emission, most first; ties by uid so the order is stable.
    let mut miners: Vec<_> = read.neurons.iter().filter(|n| n.dividends == 0).collect();
    miners.sort_by(|a, b| b.emission.cmp(&a.emission).then(a.uid.cmp(&b.uid)));
    let n = miners.len();
    if n == 0 {
        bail!(
            "netuid {} at block {}: all {} UIDs earn dividends (validators); no miner to rank",
            read.netuid,
            read.block,
            read.neurons.len()
        );
    }
    let earner = |nr: &crate::chain::scale::NeuronInfoLite, alpha_tao: f64| {
        let rank = miners.iter().position(|m| m.uid == nr.uid).map(|i| i + 1);
        let alpha_per_epoch = nr.emission as f64 / RAO;
        let alpha_day = alpha_per_epoch * epd;
        let tao_day = alpha_day * alpha_tao;
        let usd_day = tao_day * prices.tao_usd.usd;
        Earner {
            uid: nr.uid,
            hotkey: ss58_encode(&nr.hotkey, SS58_FORMAT),
            role: if rank.is_some() { "miner" } else { "validator" }.into(),
            rank,
            incentive: nr.incentive as f64 / u16::MAX as f64,
            alpha_per_epoch,
            alpha_day,
            tao_day,
            usd_day,
            usd_month: usd_day * DAYS_PER_MONTH,
            net_usd_day: usd_day - cpd.total,
            net_usd_month: (usd_day - cpd.total) * DAYS_PER_MONTH,
        }
    };
    let usd_day_at = |i: usize, f: f64| {
        miners[i].emission as f64 / RAO * epd * prices.alpha_tao * f * prices.tao_usd.usd
    };
    let break_even = |f: f64| (0..n).filter(|&i| usd_day_at(i, f) >= cpd.total).count();

    let tiers: Vec<Tier> = TIERS
        .iter()
        .map(|&p| Tier {
            top_percent: p,
            earner: earner(miners[tier_rank(p, n) - 1], prices.alpha_tao),
        })
        .collect();
    let target = match target {
        None => None,
        Some(t) => {
            let found = read.neurons.iter().find(|nr| match t {
                Target::Uid(u) => nr.uid == *u,
                Target::Hotkey(h) => ss58_encode(&nr.hotkey, SS58_FORMAT) == *h,
            });
            let found = found.with_context(|| {
                let what = match t {
                    Target::Uid(u) => format!("UID {u}"),
                    Target::Hotkey(h) => format!("hotkey {h}"),
                };
                format!(
                    "{what} is not registered on netuid {} at block {} ({} UIDs); check --uid / \
                     --hotkey",
                    read.netuid,
                    read.block,
                    read.neurons.len()
                )
            })?;
            Some(earner(found, prices.alpha_tao))
        }
    };
    let break_even_rank = break_even(1.0);
    let sensitivity = SENSITIVITY
        .iter()
        .map(|&f| Sensitivity {
            factor: f,
            alpha_tao: prices.alpha_tao * f,
            break_even_rank: break_even(f),
            tier_net_usd_day: TIERS
                .iter()
                .map(|&p| usd_day_at(tier_rank(p, n) - 1, f) - cpd.total)
                .collect(),
        })
        .collect();
    let miners_usd_day: Vec<f64> = (0..n).map(|i| usd_day_at(i, 1.0)).collect();
    let paid_per_epoch: f64 = read.neurons.iter().map(|x| x.emission as f64 / RAO).sum();
    let miners_per_epoch: f64 = miners.iter().map(|x| x.emission as f64 / RAO).sum();
    let d = &read.dynamic;
    let blocks_per_day = 86_400.0 / BLOCK_SECONDS;

    let price_line = format!(
        "alpha = {:.6} TAO, TAO = ${:.2}",
        prices.alpha_tao, prices.tao_usd.usd
    );
    let mut verdict = if break_even_rank > 0 {
        let top10 = &tiers[2].earner;
        format!(
            "Mining pays from rank <= {break_even_rank} of {n} miners (top {:.0}%) at {price_line} \
             and costs of ${:.2}/day; the top-10% miner (rank {}) nets ${:.2}/day.",
            100.0 * break_even_rank as f64 / n as f64,
            cpd.total,
            top10.rank.unwrap_or(0),
            top10.net_usd_day
        )
    } else {
        format!(
            "Mining does not pay at any rank at {price_line}: the best of {n} miners earns \
             ${:.2}/day against ${:.2}/day of costs.",
            miners_usd_day[0], cpd.total
        )
    };
    if let Some(t) = &target {
        verdict.push_str(&format!(
            " UID {} ({}{}) nets ${:.2}/day.",
            t.uid,
            t.role,
            t.rank.map(|r| format!(", rank {r}")).unwrap_or_default(),
            t.net_usd_day
        ));
    }
    let assumptions = vec![
        format!(
            "Read from {} at block {} ({}) at {}; emissions, ranks and prices move every epoch.",
            read.endpoint,
            read.block,
            read.block_hash,
            read.read_at.format("%Y-%m-%d %H:%M UTC")
        ),
        format!(
            "Earnings: each UID's last-epoch emission (the chain's Emission, alpha per epoch) x \
             {epd:.3} epochs a day ({BLOCK_SECONDS} s blocks, an epoch every tempo + 1 = {} \
             blocks). Miners are the {n} UIDs earning no dividends, ranked by that emission.",
            d.tempo as u32 + 1
        ),
        match &read.no_swap_price {
            None => {
                "Alpha is valued at the pool's swap price (SwapRuntimeApi_current_alpha_price); \
                     selling moves it (slippage is not counted)."
                    .to_string()
            }
            Some(why) => format!(
                "Alpha is valued at the pool's reserve ratio tao_in / alpha_in ({why}); selling \
                 moves it (slippage is not counted)."
            ),
        },
        format!(
            "TAO = ${:.2} from {} at {}.",
            prices.tao_usd.usd,
            prices.tao_usd.source,
            prices.tao_usd.at.format("%Y-%m-%d %H:%M UTC")
        ),
        format!(
            "Costs from config (econ.*): a {}-day cycle; the registration burn of {burn_tao:.4} \
             TAO (${burn_usd:.2}) is spread over {} days; a month is 365/12 days.",
            costs.cycle_days, costs.registration_days
        ),
    ];
    Ok(Report {
        netuid: read.netuid,
        subnet_name: d.subnet_name.clone(),
        block: read.block,
        block_hash: read.block_hash.clone(),
        endpoint: read.endpoint.clone(),
        read_at: read.read_at,
        tempo: d.tempo,
        epochs_per_day: epd,
        tao_in: d.tao_in as f64 / RAO,
        alpha_in: d.alpha_in as f64 / RAO,
        alpha_out: d.alpha_out as f64 / RAO,
        alpha_minted_per_day: d.alpha_out_emission as f64 / RAO * blocks_per_day,
        alpha_paid_per_day: paid_per_epoch * epd,
        miners_alpha_per_day: miners_per_epoch * epd,
        registration_burn_tao: burn_tao,
        registration_burn_usd: burn_usd,
        immunity_days: read.info.immunity_period as f64 / blocks_per_day,
        uids: read.neurons.len(),
        max_uids: read.info.max_allowed_uids,
        miners: n,
        earning_miners: miners.iter().filter(|m| m.emission > 0).count(),
        validators: read.neurons.len() - n,
        costs_per_month: cpd.total * DAYS_PER_MONTH,
        costs_per_day: cpd,
        tiers,
        target,
        break_even_rank,
        sensitivity,
        miners_usd_day,
        verdict,
        assumptions,
        prices,
    })
}

/// What `sv72 econ --snapshot` writes: the node's answers and the TAO price used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub format: String,
    pub chain: RawSubnetRead,
    pub tao_usd: Option<TaoUsd>,
}

/// Reads a snapshot; a bad or missing field is named with its path.
pub fn load_snapshot(path: &Path) -> Result<Snapshot> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read econ snapshot {}", path.display()))?;
    let de = &mut serde_json::Deserializer::from_str(&text);
    let snap: Snapshot = serde_path_to_error::deserialize(de).map_err(|e| {
        anyhow::anyhow!(
            "econ snapshot {}: field `{}`: {}",
            path.display(),
            e.path(),
            e.inner()
        )
    })?;
    if snap.format != SNAPSHOT_FORMAT {
        bail!(
            "econ snapshot {}: format {:?} is not {SNAPSHOT_FORMAT:?}",
            path.display(),
            snap.format
        );
    }
    Ok(snap)
}

/// Where the chain figures come from.
#[derive(Debug, Clone)]
pub enum Source {
    Node(ReadOptions),
    Snapshot(PathBuf),
}

/// What [`run`] is asked to do.
#[derive(Debug, Clone)]
pub struct EconOptions {
    pub source: Source,
    /// `--tao-usd`: beats every other price.
    pub tao_usd: Option<f64>,
    pub target: Option<Target>,
    /// Write a snapshot of what was read here.
    pub save_snapshot: Option<PathBuf>,
    /// Folder of report.md, report.json and the plot (`None`: write nothing).
    pub out_dir: Option<PathBuf>,
    /// Limit of the price endpoint request.
    pub timeout: Duration,
}

/// The TAO price: `--tao-usd`, else a snapshot's, else `econ.tao_usd`, else `econ.price_url`.
fn resolve_tao_usd(
    flag: Option<f64>,
    saved: Option<TaoUsd>,
    cfg: &EconConfig,
    timeout: Duration,
) -> Result<TaoUsd> {
    if let Some(p) = flag {
        if !(p.is_finite() && p > 0.0) {
            bail!("--tao-usd {p} must be a positive price in USD");
        }
        return Ok(TaoUsd {
            usd: p,
            source: "--tao-usd".into(),
            at: Utc::now(),
        });
    }
    if let Some(s) = saved {
        return Ok(s);
    }
    if let Some(p) = cfg.tao_usd {
        return Ok(TaoUsd {
            usd: p,
            source: "econ.tao_usd".into(),
            at: Utc::now(),
        });
    }
    match &cfg.price_url {
        Some(url) => fetch_tao_usd(url, &cfg.price_pointer, timeout),
        None => bail!(
            "TAO/USD is not on chain and none is set: pass --tao-usd PRICE, or set econ.tao_usd \
             or econ.price_url (a JSON price endpoint) in the config"
        ),
    }
}

/// Reads (from the node or a snapshot), prices, computes and writes the report. `step` is told
/// what is being fetched.
pub fn run(opts: &EconOptions, cfg: &EconConfig, mut step: impl FnMut(&str)) -> Result<Report> {
    let (raw, saved_price, source) = match &opts.source {
        Source::Node(r) => (fetch_raw(r, &mut step)?, None, r.endpoint.clone()),
        Source::Snapshot(p) => {
            let s = load_snapshot(p)?;
            (s.chain, s.tao_usd, format!("econ snapshot {}", p.display()))
        }
    };
    let read = raw.decode(&source)?;
    step("TAO price");
    let tao_usd = resolve_tao_usd(opts.tao_usd, saved_price, cfg, opts.timeout);
    if let Some(path) = &opts.save_snapshot {
        // Saved even when no price could be had, so the chain read is not lost.
        let snap = Snapshot {
            format: SNAPSHOT_FORMAT.into(),
            chain: raw.clone(),
            tao_usd: tao_usd.as_ref().ok().cloned(),
        };
        fsx::write_json_atomic(path, &snap)?;
    }
    let prices = prices(&read, tao_usd?)?;
    let report = compute(&read, prices, &Costs::from(cfg), opts.target.as_ref())?;
    if let Some(dir) = &opts.out_dir {
        report::write(dir, &report)?;
    }
    Ok(report)
}
