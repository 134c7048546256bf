//! `data::decode`: the one decode rule (the subnet miner's `Image.open` + `exif_transpose` +
//! `convert("RGB")`) against Pillow's pixels for every image kind, written by
//! `tools/decode_fixtures.py` with the subnet's pillow 10.4.0 (libjpeg-turbo 3.0.3).

use std::path::{Path, PathBuf};

use sv72::data::decode::{analyze, decode_rgb, DecodeLimits, Reason};

const LIM: DecodeLimits = DecodeLimits {
    max_pixels: 40_000_000,
    max_file_bytes: 1 << 26,
};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/decode")
}

/// Every fixture decodes to exactly Pillow's RGB pixels: JPEG (baseline 4:2:0 as validators
/// send it, 4:4:4, 4:2:2, progressive, optimised Huffman, odd sizes, grey, CMYK, EXIF
/// orientations 3/6/8) and PNG (RGBA and LA with alpha dropped, grey, 16-bit grey, palette with
/// transparency, an EXIF-rotated PNG).
#[test]
fn every_kind_decodes_to_pillows_pixels() {
    let bytes = std::fs::read(dir().join("expected.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
    names.sort();
    assert!(names.len() >= 17, "{names:?}");
    for name in &names {
        let want = st.tensor(name).unwrap();
        let (h, w) = (want.shape()[0] as u32, want.shape()[1] as u32);
        let file = std::fs::read(dir().join(name)).unwrap();
        let got = decode_rgb(&file, &LIM).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(
            got.rgb.dimensions(),
            (w, h),
            "{name}: size (EXIF orientation)"
        );
        let differing = got
            .rgb
            .as_raw()
            .iter()
            .zip(want.data())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            differing, 0,
            "{name}: {differing} values differ from Pillow's"
        );
        let info = analyze(&file, &LIM).unwrap();
        assert_eq!((info.width, info.height), (w, h), "{name}");
    }
}

/// Broken JPEGs are rejected with a reason, not a panic (libjpeg's errors unwind into a
/// rejection).
#[test]
fn broken_jpegs_are_rejected() {
    let good = std::fs::read(dir().join("baseline_420.jpg")).unwrap();
    let r = |b: &[u8]| decode_rgb(b, &LIM).unwrap_err().reason;
    assert_eq!(r(&good[..good.len() / 2]), Reason::Truncated);
    let mut garbage = good[..4].to_vec();
    garbage.extend(std::iter::repeat_n(0x5Au8, 5000));
    garbage.extend([0xFF, 0xD9]);
    assert_eq!(r(&garbage), Reason::Corrupt);
    // A corrupt header field (the SOF precision byte) after a valid start.
    let mut bad = good.clone();
    let sof = bad.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    bad[sof + 4] = 3;
    assert_eq!(r(&bad), Reason::Corrupt);
    let small = DecodeLimits {
        max_pixels: 56 * 40 - 1,
        ..LIM
    };
    assert_eq!(
        decode_rgb(&good, &small).unwrap_err().reason,
        Reason::OverMaxPixels
    );
}
