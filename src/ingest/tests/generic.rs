//! Verification table for generic sources: HMAC variants, token header, basic, bearer, query.
#![allow(clippy::type_complexity)] // Table tests spell out their row types.

use super::super::generic::{Encoding, GenericAuth, HmacScheme};
use super::super::*;
use super::*;
use crate::signing::{Algorithm, hmac};

#[test]
fn generic_schemes_follow_the_table() {
    let body = br#"{"hello":"world"}"#;
    let with = |auth: GenericAuth| {
        let mut s = source(ProviderKind::Generic, &["k1", "k2"]);
        s.generic_auth = auth;
        s
    };
    let hmac_scheme = |algorithm, encoding, prefix: &str, ts: Option<&str>| {
        with(GenericAuth::Hmac(HmacScheme {
            header: "x-signature".into(),
            algorithm,
            encoding,
            prefix: prefix.into(),
            timestamp_header: ts.map(str::to_owned),
        }))
    };
    let sha512_b64 = hmac_scheme(Algorithm::Sha512, Encoding::Base64, "", None);
    let sha1_hex = hmac_scheme(Algorithm::Sha1, Encoding::Hex, "sha1=", None);
    let stamped = hmac_scheme(Algorithm::Sha256, Encoding::Hex, "", Some("x-timestamp"));
    let b64 =
        |bytes: Vec<u8>| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes);
    let basic = with(GenericAuth::Basic {
        username: "relay".into(),
    });
    let token = with(GenericAuth::Token {
        header: "x-token".into(),
    });
    let query = with(GenericAuth::Query {
        param: "token".into(),
    });
    let bearer = with(GenericAuth::Bearer);
    let stamp = NOW.to_string();
    let stamped_sig = hex::encode(hmac(
        Algorithm::Sha256,
        b"k2",
        &[stamp.as_bytes(), b".", body],
    ));
    type Row<'a> = (
        &'a str,
        &'a TestSource,
        Vec<(&'a str, String)>,
        Option<&'a str>,
        Result<(), &'a str>,
    );
    let table: Vec<Row> = vec![
        (
            "sha512 base64",
            &sha512_b64,
            vec![("x-signature", b64(hmac(Algorithm::Sha512, b"k1", &[body])))],
            None,
            OK,
        ),
        (
            "sha512 wrong key",
            &sha512_b64,
            vec![("x-signature", b64(hmac(Algorithm::Sha512, b"zz", &[body])))],
            None,
            BAD,
        ),
        (
            "sha1 hex prefixed",
            &sha1_hex,
            vec![(
                "x-signature",
                format!(
                    "sha1={}",
                    hex::encode(hmac(Algorithm::Sha1, b"k2", &[body]))
                ),
            )],
            None,
            OK,
        ),
        (
            "sha1 missing prefix",
            &sha1_hex,
            vec![(
                "x-signature",
                hex::encode(hmac(Algorithm::Sha1, b"k2", &[body])),
            )],
            None,
            BAD,
        ),
        (
            "timestamped",
            &stamped,
            vec![
                ("x-signature", stamped_sig.clone()),
                ("x-timestamp", stamp.clone()),
            ],
            None,
            OK,
        ),
        (
            "timestamp missing",
            &stamped,
            vec![("x-signature", stamped_sig.clone())],
            None,
            MISSING,
        ),
        (
            "timestamp replaced",
            &stamped,
            vec![
                ("x-signature", stamped_sig),
                ("x-timestamp", (NOW - 1).to_string()),
            ],
            None,
            BAD,
        ),
        (
            "basic",
            &basic,
            vec![(
                "authorization",
                format!("Basic {}", b64(b"relay:k1".to_vec())),
            )],
            None,
            OK,
        ),
        (
            "basic wrong user",
            &basic,
            vec![(
                "authorization",
                format!("Basic {}", b64(b"admin:k1".to_vec())),
            )],
            None,
            BAD,
        ),
        (
            "basic wrong password",
            &basic,
            vec![(
                "authorization",
                format!("Basic {}", b64(b"relay:k3".to_vec())),
            )],
            None,
            BAD,
        ),
        ("basic missing", &basic, vec![], None, MISSING),
        ("token", &token, vec![("x-token", "k2".into())], None, OK),
        (
            "token wrong",
            &token,
            vec![("x-token", "k3".into())],
            None,
            BAD,
        ),
        ("query", &query, vec![], Some("a=1&token=k1"), OK),
        ("query wrong", &query, vec![], Some("token=k9"), BAD),
        ("query missing", &query, vec![], Some("a=1"), MISSING),
        (
            "bearer",
            &bearer,
            vec![("authorization", "Bearer k1".into())],
            None,
            OK,
        ),
        (
            "bearer wrong",
            &bearer,
            vec![("authorization", "Bearer k0".into())],
            None,
            BAD,
        ),
        // Auth schemes are case-insensitive (RFC 9110 11.1).
        (
            "bearer lower case",
            &bearer,
            vec![("authorization", "bearer k1".into())],
            None,
            OK,
        ),
        (
            "bearer shouting",
            &bearer,
            vec![("authorization", "BEARER  k2".into())],
            None,
            OK,
        ),
        (
            "not bearer",
            &bearer,
            vec![("authorization", "Bearerk1".into())],
            None,
            BAD,
        ),
        (
            "basic lower case",
            &basic,
            vec![(
                "authorization",
                format!("basic {}", b64(b"relay:k1".to_vec())),
            )],
            None,
            OK,
        ),
    ];
    for (case, source, pairs, query, expected) in table {
        assert_eq!(verify(source, &pairs, body, query), expected, "{case}");
    }
}
