//! The `/api/v1/music` routes (API.md "music").

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kit::api::{Paging, short, text};
use kit::datastore::Updated;
use kit::docs::ErrorBody;
use kit::{ApiError, AppJson, AppQuery, Caller};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::{OpenApi, ToSchema};

use crate::{AppState, Version};

const OBJTYPE: &str = "music";

#[derive(OpenApi)]
#[openapi(
    info(title = "scalelab music service", description = "CMPT 756 music service (s2): songs, v1 and v2 behaviour."),
    paths(create, list, read, update, delete, read_orig_artist, write_orig_artist),
    components(schemas(NewSong, SongChanges, OrigArtist, SongId, Song, SongPage, SongRead, OrigArtistAnswer, ErrorBody)),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// A new song.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSong {
    #[serde(rename = "Artist")]
    #[schema(
        min_length = 1,
        max_length = 1024,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    )]
    artist: String,
    #[serde(rename = "SongTitle")]
    #[schema(
        min_length = 1,
        max_length = 1024,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    )]
    song_title: String,
    #[serde(rename = "OrigArtist", default)]
    #[schema(
        min_length = 1,
        max_length = 1024,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    )]
    orig_artist: Option<String>,
}

/// Fields of a song to change; at least one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1)]
pub struct SongChanges {
    #[serde(
        rename = "Artist",
        default,
        deserialize_with = "kit::extract::not_null"
    )]
    #[schema(value_type = String, required = false, min_length = 1, max_length = 1024, pattern = r"^[^\x00]*[^\s\x00][^\x00]*$")]
    artist: Option<String>,
    #[serde(
        rename = "SongTitle",
        default,
        deserialize_with = "kit::extract::not_null"
    )]
    #[schema(value_type = String, required = false, min_length = 1, max_length = 1024, pattern = r"^[^\x00]*[^\s\x00][^\x00]*$")]
    song_title: Option<String>,
    /// `null` clears it.
    #[serde(
        rename = "OrigArtist",
        default,
        deserialize_with = "kit::extract::absent_or_null"
    )]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 1024, pattern = r"^[^\x00]*[^\s\x00][^\x00]*$")]
    orig_artist: Option<Option<String>>,
}

/// The original artist of a song (`null` to clear it; the field is required).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrigArtist {
    #[serde(default, deserialize_with = "kit::extract::absent_or_null")]
    #[schema(value_type = Option<String>, required = true, min_length = 1, max_length = 1024, pattern = r"^[^\x00]*[^\s\x00][^\x00]*$")]
    orig_artist: Option<Option<String>>,
}

/// The id of the song a change was made to.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct SongId {
    music_id: String,
}

/// A song as stored.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct Song {
    music_id: String,
    #[serde(rename = "Artist")]
    artist: String,
    #[serde(rename = "SongTitle")]
    song_title: String,
    #[serde(rename = "OrigArtist")]
    orig_artist: Option<String>,
    /// The user who created it (jwt mode); absent for loaded course data.
    owner_id: Option<String>,
}

/// One page of songs; `next` is the `cursor` of the following page (`null` at the end).
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct SongPage {
    #[serde(rename = "Count")]
    count: usize,
    #[serde(rename = "Items")]
    items: Vec<Song>,
    next: Option<String>,
}

/// A song read: `Count` 1 and the song.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct SongRead {
    #[serde(rename = "Count")]
    count: usize,
    #[serde(rename = "Items")]
    #[schema(min_items = 1, max_items = 1)]
    items: Vec<Song>,
}

#[derive(Debug, serde::Serialize, ToSchema)]
pub struct OrigArtistAnswer {
    orig_artist: Option<String>,
}

fn id_body(id: &str) -> Json<Value> {
    Json(json!({ "music_id": id }))
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("no song with music_id `{}`", short(id)))
}

/// Create a song.
#[utoipa::path(post, path = "/api/v1/music/", request_body = NewSong,
    responses((status = 200, description = "The new song's id", body = SongId, example = json!({"music_id": "6ecfafd0-8a35-4af6-a9e2-cbd79b3abeea"})),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn create(
    caller: Caller,
    State(state): State<AppState>,
    AppJson(song): AppJson<NewSong>,
) -> Result<Response, ApiError> {
    let mut fields = Map::from_iter(caller.owner_fields());
    fields.insert("Artist".into(), text(&song.artist, "Artist")?);
    fields.insert("SongTitle".into(), text(&song.song_title, "SongTitle")?);
    if let Some(orig) = &song.orig_artist {
        fields.insert("OrigArtist".into(), text(orig, "OrigArtist")?);
    }
    let id = state.service.datastore.write(OBJTYPE, fields).await?;
    Ok(id_body(&id).into_response())
}

/// List songs, a page at a time.
#[utoipa::path(get, path = "/api/v1/music/", params(Paging),
    responses((status = 200, body = SongPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list(
    _: Caller,
    State(state): State<AppState>,
    AppQuery(paging): AppQuery<Paging>,
) -> Result<Response, ApiError> {
    let page = state
        .service
        .datastore
        .list(OBJTYPE, paging.limit.as_deref(), paging.cursor.as_deref())
        .await?;
    Ok(Json(page).into_response())
}

/// Read a song. Version v2 fails a share of these with 500 `{"error":"get_song failed"}`.
#[utoipa::path(get, path = "/api/v1/music/{music_id}", params(("music_id" = String, Path)),
    responses((status = 200, body = SongRead), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 500, description = "v2's injected failure", body = ErrorBody)))]
pub async fn read(
    _: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if state.version == Version::V2 && rand::random_range(0..100u8) < state.error_percent {
        return Ok((
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": "get_song failed"})),
        )
            .into_response());
    }
    // The gateway's answer has the course's shape already: pass it through.
    let body = state
        .service
        .datastore
        .read_raw(OBJTYPE, &id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// Change a song's fields (in jwt mode, only its creator).
#[utoipa::path(put, path = "/api/v1/music/{music_id}", params(("music_id" = String, Path)), request_body = SongChanges,
    responses((status = 200, body = SongId, example = json!({"music_id": "6ecfafd0-8a35-4af6-a9e2-cbd79b3abeea"})),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, description = "Not the song's creator", body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn update(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    AppJson(changes): AppJson<SongChanges>,
) -> Result<Response, ApiError> {
    let mut fields = Map::new();
    if let Some(artist) = &changes.artist {
        fields.insert("Artist".into(), text(artist, "Artist")?);
    }
    if let Some(title) = &changes.song_title {
        fields.insert("SongTitle".into(), text(title, "SongTitle")?);
    }
    match &changes.orig_artist {
        Some(Some(orig)) => drop(fields.insert("OrigArtist".into(), text(orig, "OrigArtist")?)),
        Some(None) => drop(fields.insert("OrigArtist".into(), Value::Null)),
        None => {}
    }
    if fields.is_empty() {
        return Err(ApiError::bad_request(
            "name at least one of Artist, SongTitle, OrigArtist",
        ));
    }
    set(&state, &caller, &id, fields).await
}

/// The song, if `caller` may change it (404 or 403 otherwise).
async fn owned(state: &AppState, caller: &Caller, id: &str) -> Result<(), ApiError> {
    if caller.user_id().is_none() {
        return Ok(());
    }
    let song = state
        .service
        .datastore
        .read(OBJTYPE, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    caller.must_own(kit::auth::owner_of(&song.fields), "song")
}

async fn set(
    state: &AppState,
    caller: &Caller,
    id: &str,
    fields: Map<String, Value>,
) -> Result<Response, ApiError> {
    owned(state, caller, id).await?;
    match state
        .service
        .datastore
        .update(OBJTYPE, id, &fields, None)
        .await?
    {
        Updated::Done => Ok(id_body(id).into_response()),
        Updated::NotFound => Err(not_found(id)),
        Updated::Stale => Err(ApiError::internal("unconditional update answered 412")),
    }
}

/// Delete a song (in jwt mode, only its creator).
#[utoipa::path(delete, path = "/api/v1/music/{music_id}", params(("music_id" = String, Path)),
    responses((status = 200, body = SongId, example = json!({"music_id": "6ecfafd0-8a35-4af6-a9e2-cbd79b3abeea"})),
              (status = 401, body = ErrorBody), (status = 403, description = "Not the song's creator", body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    owned(&state, &caller, &id).await?;
    if state.service.datastore.delete(OBJTYPE, &id).await? {
        Ok(id_body(&id).into_response())
    } else {
        Err(not_found(&id))
    }
}

/// Read a song's original artist.
#[utoipa::path(get, path = "/api/v1/music/read_orig_artist/{music_id}", params(("music_id" = String, Path)),
    responses((status = 200, body = OrigArtistAnswer, example = json!({"orig_artist": "Bob Dylan"})), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn read_orig_artist(
    _: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let song = state
        .service
        .datastore
        .read(OBJTYPE, &id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    let orig = song
        .fields
        .get("OrigArtist")
        .cloned()
        .unwrap_or(Value::Null);
    Ok(Json(json!({ "orig_artist": orig })).into_response())
}

/// Set (or clear, with `null`) a song's original artist (in jwt mode, only its creator).
#[utoipa::path(put, path = "/api/v1/music/write_orig_artist/{music_id}", params(("music_id" = String, Path)), request_body = OrigArtist,
    responses((status = 200, body = SongId, example = json!({"music_id": "6ecfafd0-8a35-4af6-a9e2-cbd79b3abeea"})),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, description = "Not the song's creator", body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn write_orig_artist(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    AppJson(body): AppJson<OrigArtist>,
) -> Result<Response, ApiError> {
    let value = match &body.orig_artist {
        Some(Some(orig)) => text(orig, "orig_artist")?,
        Some(None) => Value::Null,
        None => {
            return Err(ApiError::bad_request(
                "`orig_artist` is required (`null` clears it)",
            ));
        }
    };
    set(
        &state,
        &caller,
        &id,
        Map::from_iter([("OrigArtist".to_owned(), value)]),
    )
    .await
}
