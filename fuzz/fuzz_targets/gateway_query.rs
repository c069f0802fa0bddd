//! The gateway's query parsing (`/api/v1/datastore` list, find, read): any query
//! string either parses into checked values or is refused, never a panic; a cursor the
//! gateway hands out decodes to the id it was made from.
#![no_main]

use axum::extract::Query;
use database_gateway::domain::check_id;
use database_gateway::routes::{
    FindQuery, KeyQuery, ListQuery, MAX_LIMIT, cursor_param, encode_cursor, find_params,
    key_params, list_params,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&split, rest)) = input.split_first() else {
        return;
    };
    // The tail is an engine cursor (an id) to encode, the head a query string.
    let at = usize::from(split).min(rest.len());
    let (query, id) = rest.split_at(at);
    if let Ok(id) = std::str::from_utf8(id) {
        let cursor = encode_cursor(id);
        let decoded = cursor_param(&Some(cursor.clone()));
        if id.is_empty() {
            assert_eq!(decoded, Ok(None));
        } else if !id.contains('\0') {
            assert_eq!(decoded, Ok(Some(id.to_owned())), "{cursor}");
        }
    }
    let Ok(query) = std::str::from_utf8(query) else {
        return;
    };
    if let Ok(Some(id)) = cursor_param(&Some(query.to_owned())) {
        assert!(!id.contains('\0'));
        assert_eq!(encode_cursor(&id), query, "one cursor per id");
    }
    let Ok(uri) = format!("/api/v1/datastore/scan?{query}").parse::<http::Uri>() else {
        return;
    };
    if let Ok(Query(q)) = Query::<ListQuery>::try_from_uri(&uri)
        && let Ok((_, limit, after)) = list_params(&q)
    {
        assert!((1..=MAX_LIMIT).contains(&limit));
        if let Some(after) = after {
            assert!(!after.contains('\0'));
        }
    }
    if let Ok(Query(q)) = Query::<FindQuery>::try_from_uri(&uri)
        && let Ok(p) = find_params(&q)
    {
        assert!(!p.field.is_empty() && !p.field.contains('\0') && !p.value.contains('\0'));
        assert!((1..=MAX_LIMIT).contains(&p.limit));
    }
    if let Ok(Query(q)) = Query::<KeyQuery>::try_from_uri(&uri)
        && let Ok((_, key)) = key_params(&q)
    {
        assert_eq!(check_id(key, "objkey"), Ok(()));
    }
});
