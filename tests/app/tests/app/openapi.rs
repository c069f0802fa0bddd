//! Each service documents every route of API.md in a valid OpenAPI 3 document and
//! serves a browsable UI with its assets from the binary.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::platform::Platform;

#[tokio::test]
async fn every_service_documents_its_routes_in_valid_openapi_3() {
    let p = Platform::presence().await;
    let expected: [(&crate::platform::Process, &[(&str, &str)]); 3] = [
        (
            &p.user,
            &[
                ("post", "/api/v1/user/"),
                ("get", "/api/v1/user/"),
                ("get", "/api/v1/user/{user_id}"),
                ("put", "/api/v1/user/{user_id}"),
                ("delete", "/api/v1/user/{user_id}"),
                ("put", "/api/v1/user/login"),
                ("put", "/api/v1/user/logoff"),
            ],
        ),
        (
            &p.music,
            &[
                ("post", "/api/v1/music/"),
                ("get", "/api/v1/music/"),
                ("get", "/api/v1/music/{music_id}"),
                ("put", "/api/v1/music/{music_id}"),
                ("delete", "/api/v1/music/{music_id}"),
                ("get", "/api/v1/music/read_orig_artist/{music_id}"),
                ("put", "/api/v1/music/write_orig_artist/{music_id}"),
            ],
        ),
        (
            &p.playlist,
            &[
                ("post", "/api/v1/playlist/"),
                ("get", "/api/v1/playlist/"),
                ("get", "/api/v1/playlist/{playlist_id}"),
                ("post", "/api/v1/playlist/{playlist_id}/add"),
                ("post", "/api/v1/playlist/{playlist_id}/delete"),
                ("delete", "/api/v1/playlist/{playlist_id}"),
            ],
        ),
    ];
    for (service, routes) in expected {
        let response = p
            .call_as(None, Method::GET, service, "/openapi.json", None)
            .await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "openapi.json needs no auth"
        );
        let text = response.text().await.expect("body");
        let spec = oas3::from_json(&text)
            .unwrap_or_else(|e| panic!("{}: not a valid OpenAPI 3 document: {e}", service.base));
        assert!(spec.openapi.starts_with("3."), "{}", spec.openapi);
        let doc: Value = serde_json::from_str(&text).expect("json");
        for (method, path) in routes {
            let operation = &doc["paths"][path][method];
            assert!(operation.is_object(), "{method} {path} is not documented");
            assert!(
                operation["responses"].is_object(),
                "{method} {path} has responses"
            );
        }
        // Change bodies: a name can be left out but not sent as `null` (the service
        // answers 400), so the document must not call it nullable; only a song's
        // OrigArtist is cleared with `null`.
        for (name, schema) in doc["components"]["schemas"].as_object().expect("schemas") {
            if !name.ends_with("Changes") {
                continue;
            }
            for (field, property) in schema["properties"].as_object().expect("properties") {
                let nullable = property["type"]
                    .as_array()
                    .is_some_and(|types| types.iter().any(|t| t == "null"));
                assert_eq!(
                    nullable,
                    field == "OrigArtist",
                    "{name}.{field}: {property}"
                );
            }
        }
    }
}

#[tokio::test]
async fn docs_serve_the_ui_and_its_assets_locally() {
    let p = Platform::presence().await;
    for service in [&p.user, &p.music, &p.playlist] {
        let page = p.call_as(None, Method::GET, service, "/docs/", None).await;
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.expect("html");
        assert!(html.contains("swagger-ui"), "the Swagger UI page");
        assert!(
            !html.contains("https://") && !html.contains("http://"),
            "no asset from the internet"
        );
        for asset in [
            "swagger-ui-bundle.js",
            "swagger-ui.css",
            "swagger-initializer.js",
        ] {
            let response = p
                .call_as(None, Method::GET, service, &format!("/docs/{asset}"), None)
                .await;
            assert_eq!(response.status(), StatusCode::OK, "{asset}");
            assert!(
                response.bytes().await.expect("asset").len() > 100,
                "{asset} has content"
            );
        }
        let init = p
            .call_as(
                None,
                Method::GET,
                service,
                "/docs/swagger-initializer.js",
                None,
            )
            .await
            .text()
            .await
            .expect("js");
        assert!(
            init.contains("/openapi.json"),
            "the UI loads this service's document"
        );
    }
}
