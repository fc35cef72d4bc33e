//! Ascon-AEAD128 against all 1,089 NIST SP 800-232 known-answer tests, and the frame's
//! use of it checked against an independent computation from SPEC.md §5.
#![allow(clippy::unwrap_used)]

mod common;

use ascon_aead::aead::inout::InOutBuf;
use ascon_aead::aead::{AeadInOut, KeyInit};
use ascon_aead::{AsconAead128, Key, Nonce};

struct Vector {
    count: u32,
    key: Vec<u8>,
    nonce: Vec<u8>,
    pt: Vec<u8>,
    ad: Vec<u8>,
    ct: Vec<u8>,
}

fn vectors() -> Vec<Vector> {
    let text = include_str!("vectors/ascon-aead128-kat.txt");
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let get = |name: &str| {
                let line = block.lines().find(|l| l.starts_with(name)).unwrap();
                line.split_once('=').unwrap().1.trim().to_string()
            };
            Vector {
                count: get("Count").parse().unwrap(),
                key: hex::decode(get("Key")).unwrap(),
                nonce: hex::decode(get("Nonce")).unwrap(),
                pt: hex::decode(get("PT")).unwrap(),
                ad: hex::decode(get("AD")).unwrap(),
                ct: hex::decode(get("CT")).unwrap(),
            }
        })
        .collect()
}

/// Full-tag Ascon-AEAD128: ciphertext ‖ 16-byte tag.
fn encrypt(key: &[u8], nonce: &[u8], ad: &[u8], pt: &[u8]) -> Vec<u8> {
    let cipher = AsconAead128::new(&Key::<AsconAead128>::try_from(key).unwrap());
    let nonce = Nonce::<AsconAead128>::try_from(nonce).unwrap();
    let mut buf = pt.to_vec();
    let tag = cipher
        .encrypt_inout_detached(&nonce, ad, InOutBuf::from(&mut buf[..]))
        .unwrap();
    buf.extend_from_slice(&tag);
    buf
}

#[test]
fn all_known_answer_tests() {
    let vectors = vectors();
    assert_eq!(vectors.len(), 1089);
    for v in &vectors {
        assert_eq!(
            encrypt(&v.key, &v.nonce, &v.ad, &v.pt),
            v.ct,
            "KAT Count = {}",
            v.count
        );
        // And decryption accepts it back.
        let cipher = AsconAead128::new(&Key::<AsconAead128>::try_from(&v.key[..]).unwrap());
        let (ct, tag) = v.ct.split_at(v.pt.len());
        let mut out = vec![0u8; ct.len()];
        cipher
            .decrypt_inout_detached(
                &Nonce::<AsconAead128>::try_from(&v.nonce[..]).unwrap(),
                &v.ad,
                InOutBuf::new(ct, &mut out).unwrap(),
                &tag.try_into().unwrap(),
            )
            .unwrap();
        assert_eq!(out, v.pt, "KAT Count = {} decrypt", v.count);
    }
}

#[test]
fn frame_is_standard_ascon_with_tag_truncated_to_its_first_eight_bytes() {
    let readings = common::series(common::aq6(), 1);
    let mut buf = [0u8; protocol::MAX_FRAME_LEN];
    let frame = protocol::seal(
        &mut buf,
        &readings,
        common::COUNTER,
        &common::key(),
        common::who(),
    )
    .unwrap()
    .to_vec();

    // SPEC.md §5, computed here from the text, not from the crate.
    let header = &frame[..5];
    let mut nonce = [0u8; 16];
    nonce[..4].copy_from_slice(&1u32.to_be_bytes()); // key epoch
    nonce[4..8].copy_from_slice(&common::COUNTER.to_be_bytes());
    nonce[8] = 0x01; // uplink
    let mut ad = header.to_vec();
    for id in ["lyon", "aq-0001"] {
        ad.push(id.len() as u8);
        ad.extend_from_slice(id.as_bytes());
    }
    // Plaintext: time, then the body pinned in the codec tests.
    let mut pt = common::T0.to_be_bytes().to_vec();
    pt.extend_from_slice(&[
        0x3f, 0x52, 0x7b, 0xc9, 0x01, 0xac, 0x03, 0xab, 0x04, 0x94, 0x4f,
    ]);
    let full = encrypt(&common::KEY, &nonce, &ad, &pt);
    let truncated = &full[..pt.len() + 8];
    assert_eq!(&frame[5..], truncated);
}
