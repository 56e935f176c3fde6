//! Token Status List (draft-ietf-oauth-status-list): the status of many
//! tokens in one compressed byte array, published as a signed JWT that
//! verifiers fetch and cache, so that a revoked token stops working at an
//! offline verifier within the list's `ttl` instead of at its `exp`.
//!
//! A token points into a list with its `status` claim
//! (`{"status_list": {"idx": 7, "uri": "https://as.example/status/3"}}`,
//! [`StatusClaim`]); the list token (`typ: statuslist+jwt`,
//! [`StatusListClaims`]) holds `bits` per token, packed least significant
//! bits first, DEFLATE-compressed in the ZLIB format and base64url-encoded
//! (`lst`). Both the authorization server (which writes lists) and the
//! verifiers (which read them) use this module.

use std::io::{Read, Write};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The JWT `typ` of a status list token.
pub const STATUS_LIST_TYP: &str = "statuslist+jwt";
/// Its media type (`Content-Type` of the list endpoint).
pub const STATUS_LIST_JWT_MEDIA_TYPE: &str = "application/statuslist+jwt";
/// The media type of a list as unsigned JSON.
pub const STATUS_LIST_JSON_MEDIA_TYPE: &str = "application/statuslist+json";

/// The token is valid (draft §7.1).
pub const VALID: u8 = 0x00;
/// The token is revoked for good.
pub const INVALID: u8 = 0x01;
/// The token is suspended: it may become valid again.
pub const SUSPENDED: u8 = 0x02;

/// Why a status list could not be made or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    #[error("bits must be 1, 2, 4 or 8")]
    Bits,
    #[error("status {0} does not fit in the list's bits")]
    Value(u8),
    #[error("index {0} is outside the list")]
    Index(usize),
    #[error("lst is not base64url")]
    Base64,
    #[error("lst does not inflate (DEFLATE, ZLIB format)")]
    Inflate,
    #[error("lst inflates beyond {0} bytes")]
    TooLarge(usize),
}

/// A status list as JSON (draft §4.2): what a list token's `status_list`
/// claim holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusListJson {
    pub bits: u8,
    pub lst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation_uri: Option<String>,
}

/// The claims of a status list token (draft §5.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusListClaims {
    /// The list's URI: the `uri` its tokens reference, byte for byte.
    pub sub: String,
    pub iat: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Seconds a verifier may keep the list before fetching it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    pub status_list: StatusListJson,
}

/// A referenced token's `status` claim (draft §6.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusClaim {
    pub status_list: StatusListRef,
}

/// Where a token's status is: index `idx` of the list at `uri`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusListRef {
    pub idx: u64,
    pub uri: String,
}

/// A status list, uncompressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusList {
    bits: u8,
    bytes: Vec<u8>,
}

impl StatusList {
    /// A list of `len` tokens, every one [`VALID`].
    pub fn new(bits: u8, len: usize) -> Result<Self, StatusError> {
        check_bits(bits)?;
        let per_byte = usize::from(8 / bits);
        Ok(Self {
            bits,
            bytes: vec![0; len.div_ceil(per_byte)],
        })
    }

    /// The list of `bytes`, as packed (the draft's "byte array").
    pub fn from_bytes(bits: u8, bytes: Vec<u8>) -> Result<Self, StatusError> {
        check_bits(bits)?;
        Ok(Self { bits, bytes })
    }

    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// How many tokens the list holds.
    pub fn len(&self) -> usize {
        self.bytes.len() * usize::from(8 / self.bits)
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The packed bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The status of token `idx`; `None` outside the list.
    #[inline]
    pub fn get(&self, idx: usize) -> Option<u8> {
        let (byte, shift) = self.position(idx)?;
        // In u16: at 8 bits, 1 << 8 does not fit a u8.
        let mask = ((1u16 << self.bits) - 1) as u8;
        Some((self.bytes[byte] >> shift) & mask)
    }

    /// Sets the status of token `idx`.
    pub fn set(&mut self, idx: usize, status: u8) -> Result<(), StatusError> {
        let mask = ((1u16 << self.bits) - 1) as u8;
        if status & !mask != 0 {
            return Err(StatusError::Value(status));
        }
        let (byte, shift) = self.position(idx).ok_or(StatusError::Index(idx))?;
        self.bytes[byte] = (self.bytes[byte] & !(mask << shift)) | (status << shift);
        Ok(())
    }

    #[inline]
    fn position(&self, idx: usize) -> Option<(usize, u8)> {
        // `bits` is 1, 2, 4 or 8: shifts, not divisions (verifiers look up
        // a status on every request).
        let bits_log = self.bits.trailing_zeros();
        let per_byte_log = 3 - bits_log;
        let byte = idx >> per_byte_log;
        if byte >= self.bytes.len() {
            return None;
        }
        // The draft numbers from the least significant bits of each byte.
        let shift = ((idx & ((1 << per_byte_log) - 1)) << bits_log) as u8;
        Some((byte, shift))
    }

    /// The list as JSON: compressed at the highest level, as the draft
    /// recommends.
    pub fn to_json(&self) -> StatusListJson {
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        // Writing to a Vec cannot fail.
        let compressed = match encoder.write_all(&self.bytes) {
            Ok(()) => encoder.finish().unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        StatusListJson {
            bits: self.bits,
            lst: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(compressed),
            aggregation_uri: None,
        }
    }

    /// Reads a list, refusing one that inflates beyond `max_bytes` (a
    /// small `lst` can inflate to gigabytes).
    pub fn from_json(json: &StatusListJson, max_bytes: usize) -> Result<Self, StatusError> {
        check_bits(json.bits)?;
        let compressed = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(json.lst.trim_end_matches('='))
            .map_err(|_| StatusError::Base64)?;
        let mut bytes = Vec::new();
        flate2::read::ZlibDecoder::new(compressed.as_slice())
            .take(max_bytes as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|_| StatusError::Inflate)?;
        if bytes.len() > max_bytes {
            return Err(StatusError::TooLarge(max_bytes));
        }
        Ok(Self {
            bits: json.bits,
            bytes,
        })
    }
}

fn check_bits(bits: u8) -> Result<(), StatusError> {
    match bits {
        1 | 2 | 4 | 8 => Ok(()),
        _ => Err(StatusError::Bits),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const MIB: usize = 1 << 20;

    fn json(bits: u8, lst: &str) -> StatusListJson {
        StatusListJson {
            bits,
            lst: lst.into(),
            aggregation_uri: None,
        }
    }

    /// The draft's test vectors (Appendix C, and §4.1's examples).
    #[test]
    fn reads_the_drafts_lists() {
        let one = StatusList::from_json(&json(1, "eNrbuRgAAhcBXQ"), MIB).unwrap();
        assert_eq!(one.as_bytes(), [0xb9, 0xa3]);
        let statuses: Vec<u8> = (0..16).map(|i| one.get(i).unwrap()).collect();
        assert_eq!(statuses, [1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1]);
        assert_eq!(one.get(16), None);

        let two = StatusList::from_json(&json(2, "eNo76fITAAPfAgc"), MIB).unwrap();
        assert_eq!(two.as_bytes(), [0xc9, 0x44, 0xf9]);
        let statuses: Vec<u8> = (0..12).map(|i| two.get(i).unwrap()).collect();
        assert_eq!(statuses, [1, 2, 0, 3, 0, 1, 0, 1, 1, 2, 3, 3]);
    }

    #[test]
    fn writes_what_it_reads() {
        let mut list = StatusList::new(1, 16).unwrap();
        for (i, s) in [1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1]
            .into_iter()
            .enumerate()
        {
            list.set(i, s).unwrap();
        }
        assert_eq!(list.as_bytes(), [0xb9, 0xa3]);
        assert_eq!(StatusList::from_json(&list.to_json(), MIB).unwrap(), list);

        let mut two = StatusList::new(2, 12).unwrap();
        two.set(3, 3).unwrap();
        two.set(3, 1).unwrap();
        assert_eq!(two.get(3), Some(1));
        assert_eq!(two.set(4, 4), Err(StatusError::Value(4)));
        assert_eq!(two.set(12, 1), Err(StatusError::Index(12)));

        // Every width reads back what was set, at every position of a byte
        // (8 bits a status overflowed the mask in u8 and panicked).
        for bits in [1u8, 2, 4, 8] {
            let mut list = StatusList::new(bits, 24).unwrap();
            let max = ((1u16 << bits) - 1) as u8;
            for i in 0..24 {
                list.set(i, (i as u8) & max).unwrap();
            }
            for i in 0..24 {
                assert_eq!(list.get(i), Some((i as u8) & max), "{bits} bits, index {i}");
            }
            assert_eq!(
                list.get(24 / usize::from(bits) * usize::from(bits) + 24),
                None
            );
        }
    }

    #[test]
    fn refuses_what_is_not_a_list() {
        assert_eq!(StatusList::new(3, 8), Err(StatusError::Bits));
        assert_eq!(
            StatusList::from_json(&json(1, "not base64!"), MIB),
            Err(StatusError::Base64)
        );
        assert_eq!(
            StatusList::from_json(&json(1, "AAAA"), MIB),
            Err(StatusError::Inflate)
        );
        // A megabyte of zeros is a kilobyte compressed: refused past the cap.
        let big = StatusList::new(8, MIB).unwrap().to_json();
        assert!(big.lst.len() < 2048, "{}", big.lst.len());
        assert_eq!(
            StatusList::from_json(&big, MIB - 1),
            Err(StatusError::TooLarge(MIB - 1))
        );
        assert_eq!(StatusList::from_json(&big, MIB).unwrap().len(), MIB);
    }

    #[test]
    fn a_million_tokens_with_one_percent_revoked_is_small() {
        let mut list = StatusList::new(1, 1_000_000).unwrap();
        // Every hundredth token, spread as allocation spreads them.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            list.set((x % 1_000_000) as usize, INVALID).unwrap();
        }
        let lst = list.to_json().lst;
        // Random bits at 1% carry about 0.08 bits of entropy each: some
        // 10 KB is the floor for any coding of them.
        assert!(lst.len() < 24_000, "{} bytes", lst.len());
        assert_eq!(StatusList::from_json(&list.to_json(), MIB).unwrap(), list);
    }
}
