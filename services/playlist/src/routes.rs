//! The `/api/v1/playlist` routes (API.md "playlist").

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use kit::api::{Paging, short, text};
use kit::datastore::{DatastoreError, Updated};
use kit::docs::ErrorBody;
use kit::{ApiError, AppJson, AppQuery, Caller};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::{OpenApi, ToSchema};

use crate::{AppState, songs};

const OBJTYPE: &str = "playlist";
/// Versioned-update attempts before an edit gives up with 503 (each lost race means
/// another edit landed, so this bounds only pathological contention).
const MAX_ATTEMPTS: u32 = 200;

#[derive(OpenApi)]
#[openapi(
    info(title = "scalelab playlist service", description = "CMPT 756 playlist service (s3): ordered lists of songs."),
    paths(create, list, read, add, remove, delete),
    components(schemas(NewPlaylist, Song, PlaylistId, Playlist, PlaylistPage, PlaylistRead, ErrorBody)),
    security(("bearer" = []))
)]
pub struct ApiDoc;

/// A new playlist.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPlaylist {
    #[serde(rename = "Name")]
    #[schema(
        min_length = 1,
        max_length = 1024,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    )]
    name: String,
    /// Music ids: the course's comma-separated string, or a JSON array.
    #[serde(rename = "Playlist")]
    #[schema(value_type = Object)]
    playlist: Value,
}

/// One song of a playlist.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Song {
    #[schema(
        min_length = 1,
        max_length = 1024,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    )]
    music_id: String,
}

/// The id of the playlist a change was made to.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct PlaylistId {
    playlist_id: String,
}

/// A playlist: its name and its songs' ids in order.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct Playlist {
    playlist_id: String,
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Playlist")]
    playlist: Vec<String>,
    /// The user who created it (jwt mode); absent for loaded course data.
    owner_id: Option<String>,
}

/// One page of playlists; `next` is the `cursor` of the following page (`null` at the end).
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct PlaylistPage {
    #[serde(rename = "Count")]
    count: usize,
    #[serde(rename = "Items")]
    items: Vec<Playlist>,
    next: Option<String>,
}

/// A playlist read: `Count` 1 and the playlist.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct PlaylistRead {
    #[serde(rename = "Count")]
    count: usize,
    #[serde(rename = "Items")]
    #[schema(min_items = 1, max_items = 1)]
    items: Vec<Playlist>,
}

fn id_body(id: &str) -> Json<Value> {
    Json(json!({ "playlist_id": id }))
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("no playlist with playlist_id `{}`", short(id)))
}

fn unknown_song(id: &str) -> ApiError {
    ApiError::unprocessable(format!("unknown song `{}`", short(id)))
}

/// A playlist as returned: `Playlist` always an array of ids.
fn shaped(mut fields: Map<String, Value>) -> Map<String, Value> {
    let ids = songs::stored(fields.get("Playlist"));
    fields.insert("Playlist".into(), json!(ids));
    fields
}

/// Whether a song exists in the music table.
async fn song_exists(state: &AppState, id: &str) -> Result<bool, ApiError> {
    match state.datastore.read("music", id).await {
        Ok(found) => Ok(found.is_some()),
        // An id the gateway refuses outright (e.g. too long) is no song either.
        Err(DatastoreError::Refused(status, _)) if status.is_client_error() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Create a playlist; every song must exist.
#[utoipa::path(post, path = "/api/v1/playlist/", request_body = NewPlaylist,
    responses((status = 200, body = PlaylistId, example = json!({"playlist_id": "073ebbe0-3b98-4602-b7ed-2615ae9ee7b1"})),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 422, description = "An unknown song", body = ErrorBody)))]
pub async fn create(
    caller: Caller,
    State(state): State<AppState>,
    AppJson(new): AppJson<NewPlaylist>,
) -> Result<Response, ApiError> {
    let name = text(&new.name, "Name")?;
    let ids = songs::parse(&new.playlist)?;
    let checks = ids.iter().map(|id| song_exists(&state, id));
    for (id, exists) in ids.iter().zip(futures_util::future::join_all(checks).await) {
        if !exists? {
            return Err(unknown_song(id));
        }
    }
    let mut fields = Map::from_iter([
        ("Name".to_owned(), name),
        ("Playlist".to_owned(), json!(ids)),
    ]);
    fields.extend(caller.owner_fields());
    let id = state.datastore.write(OBJTYPE, fields).await?;
    Ok(id_body(&id).into_response())
}

/// List playlists, a page at a time.
#[utoipa::path(get, path = "/api/v1/playlist/", params(Paging),
    responses((status = 200, body = PlaylistPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list(
    _: Caller,
    State(state): State<AppState>,
    AppQuery(paging): AppQuery<Paging>,
) -> Result<Response, ApiError> {
    let page = state
        .datastore
        .list_shaped(OBJTYPE, &paging, |fields| Some(shaped(fields)))
        .await?;
    Ok(Json(page).into_response())
}

/// Read a playlist: its Name and its songs in order.
#[utoipa::path(get, path = "/api/v1/playlist/{playlist_id}", params(("playlist_id" = String, Path)),
    responses((status = 200, body = PlaylistRead),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn read(
    _: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let playlist = state
        .datastore
        .read(OBJTYPE, &id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(json!({"Count": 1, "Items": [shaped(playlist.fields)]})).into_response())
}

/// Add a song at the end. Concurrent adds all land.
#[utoipa::path(post, path = "/api/v1/playlist/{playlist_id}/add", params(("playlist_id" = String, Path)), request_body = Song,
    responses((status = 200, body = PlaylistId, example = json!({"playlist_id": "073ebbe0-3b98-4602-b7ed-2615ae9ee7b1"})),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, description = "Not the playlist's creator", body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, description = "The song is already there", body = ErrorBody), (status = 422, description = "An unknown song", body = ErrorBody)))]
pub async fn add(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    AppJson(song): AppJson<Song>,
) -> Result<Response, ApiError> {
    let music_id = song.music_id.trim().to_owned();
    if music_id.is_empty() {
        return Err(ApiError::bad_request("`music_id` must not be empty"));
    }
    if !song_exists(&state, &music_id).await? {
        return Err(unknown_song(&music_id));
    }
    edit(&state, &caller, &id, |ids| {
        if ids.contains(&music_id) {
            return Err(ApiError::conflict(format!(
                "song `{}` is already in the playlist",
                short(&music_id)
            )));
        }
        if ids.len() >= songs::MAX_SONGS {
            return Err(ApiError::conflict(format!(
                "the playlist already holds {} songs",
                songs::MAX_SONGS
            )));
        }
        ids.push(music_id.clone());
        Ok(())
    })
    .await
}

/// Remove a song.
#[utoipa::path(post, path = "/api/v1/playlist/{playlist_id}/delete", params(("playlist_id" = String, Path)), request_body = Song,
    responses((status = 200, body = PlaylistId, example = json!({"playlist_id": "073ebbe0-3b98-4602-b7ed-2615ae9ee7b1"})),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, description = "Not the playlist's creator", body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, description = "The song is not there", body = ErrorBody)))]
pub async fn remove(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
    AppJson(song): AppJson<Song>,
) -> Result<Response, ApiError> {
    let music_id = song.music_id.trim().to_owned();
    edit(&state, &caller, &id, |ids| {
        let before = ids.len();
        ids.retain(|s| *s != music_id);
        if ids.len() == before {
            return Err(ApiError::conflict(format!(
                "song `{}` is not in the playlist",
                short(&music_id)
            )));
        }
        Ok(())
    })
    .await
}

/// Read, change, and write back only if nobody wrote in between; retry otherwise.
async fn edit(
    state: &AppState,
    caller: &Caller,
    id: &str,
    change: impl Fn(&mut Vec<String>) -> Result<(), ApiError>,
) -> Result<Response, ApiError> {
    for attempt in 0..MAX_ATTEMPTS {
        let playlist = state
            .datastore
            .read(OBJTYPE, id)
            .await?
            .ok_or_else(|| not_found(id))?;
        caller.must_own(kit::auth::owner_of(&playlist.fields), "playlist")?;
        let mut ids = songs::stored(playlist.fields.get("Playlist"));
        change(&mut ids)?;
        let fields = Map::from_iter([("Playlist".to_owned(), json!(ids))]);
        match state
            .datastore
            .update(OBJTYPE, id, &fields, Some(&playlist.etag))
            .await?
        {
            Updated::Done => return Ok(id_body(id).into_response()),
            Updated::NotFound => return Err(not_found(id)),
            Updated::Stale => {
                // Someone else's edit landed: spread the retries out a little.
                let jitter = u64::from(attempt.min(20)) * 200 + u64::from(rand_u16() % 500);
                tokio::time::sleep(Duration::from_micros(jitter)).await;
            }
        }
    }
    Err(ApiError::unavailable(
        "the playlist is being edited too often; retry",
    ))
}

fn rand_u16() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos ^ (nanos >> 16)) as u16
}

/// Delete a playlist (in jwt mode, only its creator).
#[utoipa::path(delete, path = "/api/v1/playlist/{playlist_id}", params(("playlist_id" = String, Path)),
    responses((status = 200, body = PlaylistId, example = json!({"playlist_id": "073ebbe0-3b98-4602-b7ed-2615ae9ee7b1"})),
              (status = 401, body = ErrorBody), (status = 403, description = "Not the playlist's creator", body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete(
    caller: Caller,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if caller.user_id().is_some() {
        let playlist = state
            .datastore
            .read(OBJTYPE, &id)
            .await?
            .ok_or_else(|| not_found(&id))?;
        caller.must_own(kit::auth::owner_of(&playlist.fields), "playlist")?;
    }
    if state.datastore.delete(OBJTYPE, &id).await? {
        Ok(id_body(&id).into_response())
    } else {
        Err(not_found(&id))
    }
}
