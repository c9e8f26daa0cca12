//! A CRD's structural schema applied to custom objects, in kube-apiserver's order
//! (`staging/src/k8s.io/apiextensions-apiserver/pkg/registry/customresource/`): unknown fields
//! pruned, `default`s filled in, then the object validated (types, enums, patterns, bounds,
//! required fields). Errors name the field path as kube-apiserver's do.
//!
//! Not modelled: CEL rules (`x-kubernetes-validations`) — there is no CEL evaluator here; the
//! operator's webhook enforces the same rules, and the notes say so.

use serde_json::{Map, Value};

/// Prunes fields the schema does not declare (unless it preserves unknown fields).
pub fn prune(value: &mut Value, schema: &Value) {
    if schema["x-kubernetes-preserve-unknown-fields"].as_bool() == Some(true) {
        return;
    }
    match value {
        Value::Object(map) => {
            let properties = schema["properties"].as_object();
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            if properties.is_none() && additional.is_none() {
                if schema["type"] == "object" {
                    map.clear();
                }
                return;
            }
            map.retain(|field, child| {
                let child_schema = properties.and_then(|p| p.get(field)).or(additional);
                match child_schema {
                    Some(s) => {
                        prune(child, s);
                        true
                    }
                    None => false,
                }
            });
        }
        Value::Array(items) => {
            for item in items {
                prune(item, &schema["items"]);
            }
        }
        _ => {}
    }
}

/// Fills in `default`s of absent fields, depth first, as structural defaulting does.
pub fn default(value: &mut Value, schema: &Value) {
    match value {
        Value::Object(map) => {
            if let Some(properties) = schema["properties"].as_object() {
                for (field, child) in properties {
                    if !map.contains_key(field)
                        && let Some(d) = child.get("default")
                    {
                        map.insert(field.clone(), d.clone());
                    }
                }
                for (field, child) in map.iter_mut() {
                    if let Some(s) = properties.get(field) {
                        default(child, s);
                    }
                }
            } else if let Some(additional) =
                schema.get("additionalProperties").filter(|a| a.is_object())
            {
                for child in map.values_mut() {
                    default(child, additional);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                default(item, &schema["items"]);
            }
        }
        _ => {}
    }
}

/// Every violation, as `path: message`.
pub fn validate(value: &Value, schema: &Value, path: &str, out: &mut Vec<String>) {
    if value.is_null() {
        if schema["nullable"].as_bool() != Some(true) && !schema["type"].is_null() {
            out.push(format!(
                "{path}: Invalid value: \"null\": {path} in body must be of type {}",
                schema["type"].as_str().unwrap_or("object")
            ));
        }
        return;
    }
    let int_or_string = schema["x-kubernetes-int-or-string"].as_bool() == Some(true);
    let type_ok = match schema["type"].as_str() {
        _ if int_or_string => value.is_i64() || value.is_u64() || value.is_string(),
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    if !type_ok {
        out.push(format!(
            "{path}: Invalid value: \"{}\": {path} in body must be of type {}",
            json_type(value),
            schema["type"].as_str().unwrap_or_default()
        ));
        return;
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(value)
    {
        let supported: Vec<String> = options.iter().map(|o| o.to_string()).collect();
        out.push(format!(
            "{path}: Unsupported value: {value}: supported values: {}",
            supported.join(", ")
        ));
    }
    if let (Some(pattern), Some(text)) = (schema["pattern"].as_str(), value.as_str())
        && let Ok(re) = regex::Regex::new(pattern)
        && !re.is_match(text)
    {
        out.push(format!(
            "{path}: Invalid value: \"{text}\": {path} in body should match '{pattern}'"
        ));
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema["minimum"].as_f64()
            && n < min
        {
            out.push(format!("{path}: Invalid value: {value}: {path} in body should be greater than or equal to {min}"));
        }
        if let Some(max) = schema["maximum"].as_f64()
            && n > max
        {
            out.push(format!("{path}: Invalid value: {value}: {path} in body should be less than or equal to {max}"));
        }
    }
    if let (Some(max), Some(text)) = (schema["maxLength"].as_u64(), value.as_str())
        && text.chars().count() as u64 > max
    {
        out.push(format!("{path}: Too long: may not be more than {max} bytes"));
    }
    match value {
        Value::Object(map) => {
            for required in
                schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str)
            {
                if !map.contains_key(required) {
                    out.push(format!("{path}.{required}: Required value"));
                }
            }
            validate_fields(map, schema, path, out);
        }
        Value::Array(items) => {
            if let Some(max) = schema["maxItems"].as_u64()
                && items.len() as u64 > max
            {
                out.push(format!(
                    "{path}: Too many: {}: must have at most {max} items",
                    items.len()
                ));
            }
            if let Some(min) = schema["minItems"].as_u64()
                && (items.len() as u64) < min
            {
                out.push(format!(
                    "{path}: Invalid value: {}: {path} in body should have at least {min} items",
                    items.len()
                ));
            }
            for (i, item) in items.iter().enumerate() {
                validate(item, &schema["items"], &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn validate_fields(map: &Map<String, Value>, schema: &Value, path: &str, out: &mut Vec<String>) {
    let properties = schema["properties"].as_object();
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (field, child) in map {
        if let Some(s) = properties.and_then(|p| p.get(field)).or(additional) {
            validate(child, s, &format!("{path}.{field}"), out);
        }
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Prune, default and validate a custom object's body (everything but metadata, apiVersion and
/// kind, which the server owns).
pub fn admit(object: &mut Value, schema: &Value) -> Result<(), Vec<String>> {
    let Some(map) = object.as_object_mut() else {
        return Err(vec!["body must be an object".into()]);
    };
    let properties = schema["properties"].as_object();
    let mut errors = Vec::new();
    let fields: Vec<String> = map.keys().cloned().collect();
    for field in fields {
        if matches!(field.as_str(), "metadata" | "apiVersion" | "kind") {
            continue;
        }
        match properties.and_then(|p| p.get(&field)) {
            Some(s) => {
                if let Some(child) = map.get_mut(&field) {
                    prune(child, s);
                }
            }
            None if schema["x-kubernetes-preserve-unknown-fields"].as_bool() == Some(true) => {}
            None => {
                map.remove(&field);
            }
        }
    }
    if let Some(properties) = properties {
        for (field, s) in properties {
            if matches!(field.as_str(), "metadata" | "apiVersion" | "kind") {
                continue;
            }
            if !map.contains_key(field)
                && let Some(d) = s.get("default")
            {
                map.insert(field.clone(), d.clone());
            }
            if let Some(child) = map.get_mut(field) {
                default(child, s);
                validate(child, s, field, &mut errors);
            }
        }
        for required in
            schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str)
        {
            if !map.contains_key(required) {
                errors.push(format!("{required}: Required value"));
            }
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}
