//! The CloudFormation template creates the tables the gateway's DynamoDB engine expects.

use database_gateway::domain::ObjType;
use database_gateway::store::dynamodb::{EXPIRES, INDEXED_FIELDS};
use serde_json::Value;

fn template() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../k8s/aws/dynamodb-tables.yaml"
    );
    let text = std::fs::read_to_string(path).expect("read the template");
    serde_yaml_ng::from_str(&text).expect("the template is valid YAML")
}

#[test]
fn the_template_declares_the_three_tables_with_their_key_schemas() {
    let template = template();
    assert_eq!(template["AWSTemplateFormatVersion"], "2010-09-09");
    assert_eq!(template["Parameters"]["Suffix"]["Default"], "");
    let resources = template["Resources"].as_object().expect("Resources");
    let tables: Vec<&Value> = resources
        .values()
        .filter(|r| r["Type"] == "AWS::DynamoDB::Table")
        .collect();
    assert_eq!(tables.len(), 3);

    for (objtype, base) in [
        (ObjType::User, "User"),
        (ObjType::Music, "Music"),
        (ObjType::Playlist, "Playlist"),
    ] {
        let table = tables
            .iter()
            .find(|t| t["Properties"]["TableName"]["Fn::If"][2] == base)
            .unwrap_or_else(|| panic!("no {base} table"));
        let props = &table["Properties"];
        let name = &props["TableName"]["Fn::If"];
        assert_eq!(name[0], "HasSuffix");
        assert_eq!(
            name[1]["Fn::Sub"],
            format!("{base}-${{Suffix}}"),
            "course naming: {base}-<suffix>"
        );
        assert_eq!(props["BillingMode"], "PAY_PER_REQUEST");

        let key = objtype.id_field();
        assert_eq!(
            props["KeySchema"],
            serde_json::json!([{"AttributeName": key, "KeyType": "HASH"}]),
            "{base}"
        );
        let defined = |attr: &str| {
            props["AttributeDefinitions"]
                .as_array()
                .expect("definitions")
                .iter()
                .any(|d| d["AttributeName"] == attr && d["AttributeType"] == "S")
        };
        assert!(defined(key), "{base}: {key} is a string");
        assert_eq!(props["TimeToLiveSpecification"]["AttributeName"], EXPIRES);

        let indexes = props["GlobalSecondaryIndexes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let expected: Vec<&str> = INDEXED_FIELDS
            .iter()
            .filter(|(t, _)| *t == objtype)
            .map(|(_, f)| *f)
            .collect();
        assert_eq!(
            indexes.len(),
            expected.len(),
            "{base}: the indexes the engine uses"
        );
        for field in expected {
            assert!(defined(field), "{base}: {field} is declared");
            let index = indexes
                .iter()
                .find(|i| i["IndexName"] == format!("{field}-index"))
                .expect("index");
            assert_eq!(
                index["KeySchema"],
                serde_json::json!([{"AttributeName": field, "KeyType": "HASH"}])
            );
            assert_eq!(index["Projection"]["ProjectionType"], "ALL");
        }
    }
}
