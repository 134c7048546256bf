//! TensorBoard event files (`events.out.tfevents.*`) with scalar summaries, hand-encoded.
//!
//! Each record is TFRecord-framed: `u64 length (LE) | u32 masked_crc32c(length) | data |
//! u32 masked_crc32c(data)`, where `masked = ((crc >> 15) | (crc << 17)) + 0xa282ead8`. The data is
//! a protobuf `tensorflow.Event`: `wall_time` (1, double), `step` (2, int64), `file_version`
//! (3, string) or `summary` (5, message `Summary { repeated Value value = 1 }` with
//! `Value { string tag = 1; float simple_value = 2 }`). That is all `tensorboard` and
//! `wandb sync --sync-tensorboard` need for scalars.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// CRC-32C (Castagnoli, the iSCSI polynomial), as TFRecord uses.
pub fn crc32c(data: &[u8]) -> u32 {
    const CASTAGNOLI: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
    CASTAGNOLI.checksum(data)
}

/// TFRecord's masked CRC.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let c = crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_key(buf: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(buf, (u64::from(field) << 3) | u64::from(wire));
}

fn put_bytes(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(buf, field, 2);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// Encodes an `Event` with `wall_time`, `step` and either a file version or scalar values.
fn encode_event(
    wall_time: f64,
    step: i64,
    file_version: Option<&str>,
    scalars: &[(&str, f32)],
) -> Vec<u8> {
    let mut ev = Vec::new();
    put_key(&mut ev, 1, 1);
    ev.extend_from_slice(&wall_time.to_le_bytes());
    put_key(&mut ev, 2, 0);
    put_varint(&mut ev, step as u64);
    if let Some(v) = file_version {
        put_bytes(&mut ev, 3, v.as_bytes());
    }
    if !scalars.is_empty() {
        let mut summary = Vec::new();
        for (tag, value) in scalars {
            let mut val = Vec::new();
            put_bytes(&mut val, 1, tag.as_bytes());
            put_key(&mut val, 2, 5);
            val.extend_from_slice(&value.to_le_bytes());
            put_bytes(&mut summary, 1, &val);
        }
        put_bytes(&mut ev, 5, &summary);
    }
    ev
}

/// Appends TFRecord-framed events to one event file.
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    /// Creates `dir/events.out.tfevents.<unix secs>.sv72.<pid>` and writes the version header.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let now = unix_now();
        let path = dir.join(format!(
            "events.out.tfevents.{}.sv72.{}",
            now as u64,
            std::process::id()
        ));
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot create TensorBoard file {}", path.display()))?;
        let mut w = EventWriter {
            path,
            out: BufWriter::new(f),
        };
        w.write_record(&encode_event(now, 0, Some("brain.Event:2"), &[]))?;
        w.flush()?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_record(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        self.out.write_all(&len)?;
        self.out.write_all(&masked_crc32c(&len).to_le_bytes())?;
        self.out.write_all(data)?;
        self.out.write_all(&masked_crc32c(data).to_le_bytes())?;
        Ok(())
    }

    /// Writes scalars for one step (one event holding every value).
    pub fn scalars(&mut self, step: i64, values: &[(&str, f32)]) -> Result<()> {
        self.write_record(&encode_event(unix_now(), step, None, values))
            .with_context(|| format!("writing {}", self.path.display()))?;
        self.flush()
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out
            .flush()
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Reads every record of a TFRecord file, checking both CRCs of each.
pub fn read_records(path: &Path) -> Result<Vec<Vec<u8>>> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if i + 12 > bytes.len() {
            bail!("{}: truncated record header at byte {i}", path.display());
        }
        let len_bytes = &bytes[i..i + 8];
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[i + 8..i + 12].try_into().expect("4 bytes"));
        if crc != masked_crc32c(len_bytes) {
            bail!("{}: bad length CRC at byte {i}", path.display());
        }
        let start = i + 12;
        if start + len + 4 > bytes.len() {
            bail!("{}: truncated record at byte {i}", path.display());
        }
        let data = &bytes[start..start + len];
        let dcrc = u32::from_le_bytes(
            bytes[start + len..start + len + 4]
                .try_into()
                .expect("4 bytes"),
        );
        if dcrc != masked_crc32c(data) {
            bail!("{}: bad data CRC at byte {i}", path.display());
        }
        out.push(data.to_vec());
        i = start + len + 4;
    }
    Ok(out)
}

fn get_varint(b: &[u8], i: &mut usize) -> Result<u64> {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let byte = *b.get(*i).context("truncated varint")?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
        shift += 7;
        if shift > 63 {
            bail!("varint too long");
        }
    }
}

/// Iterates `(field, wire type, payload)` of a protobuf message (varint payloads as LE bytes).
fn fields(b: &[u8]) -> Result<Vec<(u32, u8, Vec<u8>)>> {
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let key = get_varint(b, &mut i)?;
        let (field, wire) = ((key >> 3) as u32, (key & 7) as u8);
        let payload = match wire {
            0 => get_varint(b, &mut i)?.to_le_bytes().to_vec(),
            1 => {
                let s = b.get(i..i + 8).context("truncated fixed64")?.to_vec();
                i += 8;
                s
            }
            2 => {
                let n = get_varint(b, &mut i)? as usize;
                let s = b.get(i..i + n).context("truncated bytes")?.to_vec();
                i += n;
                s
            }
            5 => {
                let s = b.get(i..i + 4).context("truncated fixed32")?.to_vec();
                i += 4;
                s
            }
            w => bail!("unsupported wire type {w}"),
        };
        out.push((field, wire, payload));
    }
    Ok(out)
}

/// Decodes the scalar summaries of one event: `(step, [(tag, value)])`.
pub fn decode_scalars(event: &[u8]) -> Result<(i64, Vec<(String, f32)>)> {
    let mut step = 0i64;
    let mut vals = Vec::new();
    for (f, _, p) in fields(event)? {
        match f {
            2 => step = u64::from_le_bytes(p[..8].try_into().expect("8 bytes")) as i64,
            5 => {
                for (sf, _, vp) in fields(&p)? {
                    if sf != 1 {
                        continue;
                    }
                    let (mut tag, mut value) = (String::new(), f32::NAN);
                    for (vf, _, x) in fields(&vp)? {
                        match vf {
                            1 => tag = String::from_utf8_lossy(&x).into_owned(),
                            2 => value = f32::from_le_bytes(x[..4].try_into().expect("4 bytes")),
                            _ => {}
                        }
                    }
                    vals.push((tag, value));
                }
            }
            _ => {}
        }
    }
    Ok((step, vals))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_vectors() {
        // RFC 3720 check value and the iSCSI 32-zero-bytes vector.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
    }
}
