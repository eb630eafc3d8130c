//! The ingest pipeline once the body is in, as one pure function: verify, parse, classify,
//! take the dedup key a signature covers, route. The HTTP handler and the robustness test
//! both call it.

use std::collections::HashMap;

use super::{Classification, Credentials, Inbound, Provider, Rejection, parse_payload};
use crate::domain::{KeyPart, Name, Routed};
use crate::routing::{EventFacts, Route, coalescing_key, destinations_for};

/// A verified request, classified and routed, ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Admitted {
    pub classification: Classification,
    pub destinations: Vec<Routed>,
}

/// What ingest knows of routing: the routes, and for `latest` destinations the parts of
/// their coalescing key.
pub struct Routes<'a> {
    pub routes: &'a [Route],
    pub coalescing: &'a HashMap<Name, Vec<KeyPart>>,
    /// What of a payload classification and these routes' conditions read.
    pub fields: &'a super::Fields,
}

pub fn accept(
    provider: &dyn Provider,
    credentials: &Credentials,
    source: &Name,
    routes: &Routes<'_>,
    inbound: &Inbound<'_>,
) -> Result<Admitted, Rejection> {
    provider.verify(inbound, credentials)?;
    // Always parsed (only the paths classification and the conditions read): what ingest
    // classifies (ref, project, sender) is stored with the event for filters, coalescing
    // keys and display, not only used for routing.
    let payload = parse_payload(inbound.headers, inbound.body, routes.fields);
    let mut classification = provider.classify(inbound, payload.as_ref());
    if let Some(signed_id) = provider.signed_id(inbound, credentials) {
        // Only what the signature covers may decide "repeat or new": an unsigned
        // Idempotency-Key would let a captured request be replayed as new events.
        classification.dedup_key = Some(signed_id);
    }
    let facts = EventFacts {
        classification: &classification,
        payload: payload.as_ref(),
    };
    let destinations = destinations_for(routes.routes, source, &facts)
        .into_iter()
        .map(|destination| Routed {
            coalesce_key: routes
                .coalescing
                .get(&destination)
                .map(|parts| coalescing_key(parts, source, &classification)),
            destination,
        })
        .collect();
    Ok(Admitted {
        classification,
        destinations,
    })
}
