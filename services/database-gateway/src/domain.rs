//! What the gateway accepts, checked once at the edge so that every engine stores the
//! same things: object types, ids, field names and JSON values.

use kit::ApiError;
use serde_json::{Map, Value};

/// The attributes of one item: field name to JSON value.
pub type Attrs = Map<String, Value>;

/// The object types the gateway stores; anything else is a 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjType {
    User,
    Music,
    Playlist,
}

impl ObjType {
    pub const ALL: [ObjType; 3] = [ObjType::User, ObjType::Music, ObjType::Playlist];

    pub fn parse(text: &str) -> Result<Self, ApiError> {
        match text {
            "user" => Ok(Self::User),
            "music" => Ok(Self::Music),
            "playlist" => Ok(Self::Playlist),
            other => Err(ApiError::bad_request(format!(
                "unknown objtype `{}`: expected user, music or playlist",
                truncate(other, 64)
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Music => "music",
            Self::Playlist => "playlist",
        }
    }

    /// The name of the key field, as the course spells it: `user_id`, `music_id`, `playlist_id`.
    pub fn id_field(self) -> &'static str {
        match self {
            Self::User => "user_id",
            Self::Music => "music_id",
            Self::Playlist => "playlist_id",
        }
    }
}

/// Longest accepted id, in bytes (DynamoDB allows 2048 for a hash key; ids are UUIDs).
pub const MAX_ID_BYTES: usize = 256;

/// Ids and field names starting with this are the gateway's own bookkeeping (the
/// DynamoDB engine keeps versions and idempotency records under such names).
pub const RESERVED_PREFIX: &str = "__";

/// Checks an item id: a non-empty string of at most [`MAX_ID_BYTES`] without NUL,
/// not starting with [`RESERVED_PREFIX`].
pub fn check_id(id: &str, what: &str) -> Result<(), ApiError> {
    if id.is_empty() {
        return Err(ApiError::bad_request(format!("{what} must not be empty")));
    }
    if id.starts_with(RESERVED_PREFIX) {
        return Err(ApiError::bad_request(format!(
            "{what} must not start with `{RESERVED_PREFIX}` (reserved)"
        )));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(ApiError::bad_request(format!(
            "{what} is longer than {MAX_ID_BYTES} bytes"
        )));
    }
    if id.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "{what} must not contain NUL characters"
        )));
    }
    Ok(())
}

/// Checks attributes so that every engine can store them exactly: field names are
/// non-empty, hold no NUL and do not start with [`RESERVED_PREFIX`], no string holds a NUL character (PostgreSQL's JSONB cannot), and numbers
/// fit DynamoDB's range (38 significant digits, magnitude 1E-130 to 9.99E+125).
pub fn check_attrs(attrs: &Attrs) -> Result<(), ApiError> {
    for (name, value) in attrs {
        if name.is_empty() {
            return Err(ApiError::bad_request("field names must not be empty"));
        }
        if name.starts_with(RESERVED_PREFIX) {
            return Err(ApiError::bad_request(format!(
                "field `{}` starts with `{RESERVED_PREFIX}`, which is reserved",
                truncate(name, 64)
            )));
        }
        if name.contains('\0') {
            return Err(ApiError::bad_request(
                "field names must not contain NUL characters",
            ));
        }
        check_value(name, value, 0)?;
    }
    Ok(())
}

/// Deepest nesting accepted inside a value (DynamoDB allows 32 levels).
const MAX_DEPTH: usize = 32;

fn check_value(field: &str, value: &Value, depth: usize) -> Result<(), ApiError> {
    if depth > MAX_DEPTH {
        return Err(ApiError::bad_request(format!(
            "field `{}` nests deeper than {MAX_DEPTH} levels",
            truncate(field, 64)
        )));
    }
    let nul = || {
        ApiError::bad_request(format!(
            "field `{}` holds a NUL character, which cannot be stored",
            truncate(field, 64)
        ))
    };
    match value {
        Value::String(s) if s.contains('\0') => Err(nul()),
        Value::Number(n) => check_number(&n.to_string()).map_err(|why| {
            ApiError::bad_request(format!(
                "field `{}`: number {}: {why}",
                truncate(field, 64),
                truncate(&n.to_string(), 48)
            ))
        }),
        Value::Array(items) => items
            .iter()
            .try_for_each(|v| check_value(field, v, depth + 1)),
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            if k.contains('\0') {
                return Err(nul());
            }
            check_value(field, v, depth + 1)
        }),
        _ => Ok(()),
    }
}

/// Checks a JSON number's text against DynamoDB's number limits.
fn check_number(text: &str) -> Result<(), &'static str> {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (
            &unsigned[..i],
            unsigned[i + 1..]
                .parse::<i64>()
                .map_err(|_| "exponent out of range")?,
        ),
        None => (unsigned, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: String = format!("{int_part}{frac_part}");
    let Some(first) = digits.find(|c| c != '0') else {
        return Ok(());
    };
    let last = digits.rfind(|c| c != '0').unwrap_or(first);
    if last - first + 1 > 38 {
        return Err("has more than 38 significant digits");
    }
    // Decimal exponent of the leading significant digit.
    // Saturating: an exponent near i64's limits is simply out of range.
    let magnitude = exponent.saturating_add(int_part.len() as i64 - 1 - first as i64);
    if magnitude > 125 {
        return Err("is larger than 9.99E+125");
    }
    if magnitude < -130 {
        return Err("is closer to zero than 1E-130");
    }
    Ok(())
}

/// At most `max` bytes of `text`, cut on a character boundary, for error messages.
pub fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objtypes_outside_the_allow_list_are_rejected() {
        assert_eq!(ObjType::parse("music"), Ok(ObjType::Music));
        assert_eq!(
            ObjType::parse("Music").map_err(|e| e.status().as_u16()),
            Err(400)
        );
        assert_eq!(
            ObjType::parse("items; drop").map_err(|e| e.status().as_u16()),
            Err(400)
        );
    }

    #[test]
    fn numbers_within_dynamodb_limits_pass() {
        for ok in [
            "0",
            "-0",
            "1",
            "1.5",
            "-12.25",
            "1e125",
            "9.99e125",
            "1e-130",
            "12345678901234567890123456789012345678",
            "0.000001",
        ] {
            assert_eq!(check_number(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn numbers_beyond_dynamodb_limits_fail() {
        for bad in [
            "1e126",
            "1e-131",
            "123456789012345678901234567890123456789",
            "1e99999999999999999999",
            "1e9223372036854775807",
            "-0.5e-9223372036854775808",
        ] {
            assert!(check_number(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reserved_ids_and_field_names_are_rejected() {
        assert!(check_id("__idempotency/x", "objkey").is_err());
        assert_eq!(check_id("_one_underscore", "objkey"), Ok(()));
        let attrs: Attrs = serde_json::from_str(r#"{"__version": 1}"#).expect("valid json");
        assert!(check_attrs(&attrs).is_err());
        let nested: Attrs = serde_json::from_str(r#"{"ok": {"__inside": 1}}"#).expect("valid json");
        assert_eq!(
            check_attrs(&nested),
            Ok(()),
            "only top-level names are reserved"
        );
    }

    #[test]
    fn nul_characters_and_empty_names_are_rejected() {
        let attrs: Attrs = serde_json::from_str(r#"{"a": "x\u0000y"}"#).expect("valid json");
        assert!(check_attrs(&attrs).is_err());
        let attrs: Attrs = serde_json::from_str(r#"{"": 1}"#).expect("valid json");
        assert!(check_attrs(&attrs).is_err());
        let attrs: Attrs =
            serde_json::from_str(r#"{"Name": 1, "a b": [1, {"x\"y": null}]}"#).expect("valid json");
        assert_eq!(check_attrs(&attrs), Ok(()));
    }

    /// Found by the `gateway_attrs` fuzz target: a NUL in a top-level field name was
    /// accepted (only nested names and strings were checked), which PostgreSQL's JSONB
    /// cannot store.
    #[test]
    fn a_nul_in_a_top_level_field_name_is_rejected() {
        let input = br#"{"::::::::::::::::\u0000Mrsion":1e1}"#;
        let attrs: Attrs = serde_json::from_slice(input).expect("valid json");
        assert_eq!(
            check_attrs(&attrs).map_err(|e| e.status().as_u16()),
            Err(400)
        );
    }
}
