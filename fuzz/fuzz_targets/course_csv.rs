//! The course CSV reader (`loader data`) on any bytes: it never panics, a good row
//! is exactly the course's shape (a valid UUID, every field non-empty, an email with
//! `@`, a playlist of music UUIDs), and writing good rows back as CSV reads them
//! again unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loader::data::{TABLES, read_table};
use serde_json::Value;

fuzz_target!(|input: &[u8]| {
    let Some((&which, csv_bytes)) = input.split_first() else {
        return;
    };
    let table = TABLES[usize::from(which) % TABLES.len()];
    let (objtype, _, header) = table;
    let Ok(rows) = read_table(table, "fuzz.csv", csv_bytes) else {
        return;
    };
    let mut good = Vec::new();
    for row in rows {
        assert!(row.origin.starts_with("fuzz.csv:"), "{}", row.origin);
        let Ok(body) = row.body else { continue };
        assert_eq!(body["objtype"], objtype);
        let uuid = body["uuid"].as_str().expect("a uuid");
        assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{uuid}");
        let mut fields = Vec::new();
        for name in header.iter() {
            let value = match *name {
                "UUID" => uuid.to_owned(),
                "Playlist" => {
                    let ids: Vec<&str> = body["Playlist"]
                        .as_array()
                        .expect("a list")
                        .iter()
                        .map(|v| v.as_str().expect("an id"))
                        .collect();
                    assert!(
                        ids.iter().all(|id| uuid::Uuid::parse_str(id).is_ok()),
                        "{ids:?}"
                    );
                    ids.join(",")
                }
                other => {
                    let value = body[other].as_str().expect("a string field").to_owned();
                    assert!(
                        !value.is_empty() && value.trim() == value,
                        "`{other}`: {value:?}"
                    );
                    value
                }
            };
            fields.push(value);
        }
        if objtype == "user" {
            assert!(fields[2].contains('@'), "{:?}", fields[2]);
        }
        good.push((body, fields));
    }
    // Round trip: the good rows written as CSV read back as the same bodies.
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(header.iter()).expect("header");
    for (_, fields) in &good {
        writer.write_record(fields).expect("row");
    }
    let written = writer.into_inner().expect("csv");
    let again = read_table(table, "again.csv", written.as_slice()).expect("a header we wrote");
    let again: Vec<Value> = again
        .into_iter()
        .map(|r| r.body.expect("a row we wrote is good"))
        .collect();
    let good: Vec<Value> = good.into_iter().map(|(b, _)| b).collect();
    assert_eq!(again, good);
});
