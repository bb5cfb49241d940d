//! Network Time Security for NTP (RFC 8915), the pure parts: the NTS extension fields of a
//! request and a reply ([`ef`]), the AEAD they and the cookies are sealed with ([`aead`]), and
//! cookies under rotating master keys ([`cookie`]), and the server's answer to an NTS request
//! ([`server`]).
//!
//! No IO, no clock, no randomness: every key and nonce is a parameter, so the same code runs in
//! the workers, in the NTS-KE server and in tests with fixed values.

pub mod aead;
pub mod cookie;
pub mod ef;
pub mod gcm_siv;
pub mod ke;
pub mod server;
pub mod siv;

pub use aead::{Aead, AesGcmSiv128, AesSivCmac256, AEAD_AES_128_GCM_SIV, AEAD_AES_SIV_CMAC_256, TAG_LEN};
pub use cookie::{ClientKeys, KeySet, KeySetError, MasterKey, COOKIE_LEN, MASTER_KEY_LEN};
pub use ef::{parse_request, NtsParse, NtsRequest};
