//! The song list of a playlist: the course's comma-separated string
//! (`"id1,id2"`) or a JSON array of ids, read the same way.

use kit::ApiError;
use serde_json::Value;

/// Most songs one playlist may hold.
pub const MAX_SONGS: usize = 1000;

/// The ids of a `Playlist` value as a client sent it: 400 for anything else.
pub fn parse(value: &Value) -> Result<Vec<String>, ApiError> {
    let ids: Vec<String> = match value {
        Value::String(text) if text.trim().is_empty() => Vec::new(),
        Value::String(text) => text.split(',').map(|id| id.trim().to_owned()).collect(),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(id) => Ok(id.trim().to_owned()),
                _ => Err(ApiError::bad_request(
                    "`Playlist` must hold music ids (strings)",
                )),
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(ApiError::bad_request(
                "`Playlist` must be a comma-separated string or an array of music ids",
            ));
        }
    };
    if ids.iter().any(String::is_empty) {
        return Err(ApiError::bad_request("`Playlist` has an empty music id"));
    }
    if ids.len() > MAX_SONGS {
        return Err(ApiError::bad_request(format!(
            "a playlist holds at most {MAX_SONGS} songs"
        )));
    }
    for (i, id) in ids.iter().enumerate() {
        if ids[..i].contains(id) {
            return Err(ApiError::bad_request(format!(
                "song `{}` appears twice",
                kit::api::short(id)
            )));
        }
    }
    Ok(ids)
}

/// The ids of a stored `Playlist` (the loader may have stored the course's string).
pub fn stored(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(Value::String(text)) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_course_string_and_an_array_read_the_same() {
        let course = parse(&json!("6ecfafd0-8a35, c2573193-f333")).expect("string");
        let array = parse(&json!(["6ecfafd0-8a35", "c2573193-f333"])).expect("array");
        assert_eq!(course, array);
        assert_eq!(parse(&json!("")).expect("empty"), Vec::<String>::new());
        assert_eq!(stored(Some(&json!("a,b"))), vec!["a", "b"]);
    }

    #[test]
    fn bad_song_lists_are_400() {
        for bad in [
            json!("a,,b"),
            json!(["a", 1]),
            json!(5),
            json!({"a": 1}),
            json!(["a", "a"]),
        ] {
            assert!(parse(&bad).is_err(), "{bad}");
        }
    }
}
