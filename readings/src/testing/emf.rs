//! EMF checks: a function's stdout read as CloudWatch Embedded Metric Format documents, each
//! checked against the specification.

/// One EMF document, checked against CloudWatch's Embedded Metric Format specification
/// by [`check_emf`].
#[derive(Debug, Clone)]
pub struct EmfDocument {
    pub namespace: String,
    pub dimension_sets: Vec<Vec<String>>,
    /// Metric name → (unit, value); an array of values is summed.
    pub metrics: std::collections::BTreeMap<String, (String, f64)>,
    pub document: serde_json::Value,
}

impl EmfDocument {
    /// The value of `name`, if the document defines that metric.
    pub fn value(&self, name: &str) -> Option<f64> {
        self.metrics.get(name).map(|(_, v)| *v)
    }
}

/// The lines of `output` that are EMF documents (JSON objects with `_aws`), each checked
/// with [`check_emf`].
pub fn emf_documents(output: &[String]) -> Vec<EmfDocument> {
    output
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .map(|v| check_emf(&v))
        .collect()
}

/// Checks `doc` against the EMF specification and returns its metrics; panics naming the
/// rule it breaks. The rules: `_aws.Timestamp` is a number of epoch milliseconds (here:
/// within a day of now); `_aws.CloudWatchMetrics` is a non-empty array of directives, each
/// with a non-empty `Namespace`, `Dimensions` (an array of arrays of at most 30 strings,
/// each a top-level member whose value is a string) and `Metrics` (at most 100 `{Name,
/// Unit}` objects, `Unit` one of CloudWatch's units when present), and every metric `Name`
/// is a top-level member whose value is a number or an array of at most 100 numbers.
pub fn check_emf(doc: &serde_json::Value) -> EmfDocument {
    const UNITS: [&str; 27] = [
        "Seconds",
        "Microseconds",
        "Milliseconds",
        "Bytes",
        "Kilobytes",
        "Megabytes",
        "Gigabytes",
        "Terabytes",
        "Bits",
        "Kilobits",
        "Megabits",
        "Gigabits",
        "Terabits",
        "Percent",
        "Count",
        "Bytes/Second",
        "Kilobytes/Second",
        "Megabytes/Second",
        "Gigabytes/Second",
        "Terabytes/Second",
        "Bits/Second",
        "Kilobits/Second",
        "Megabits/Second",
        "Gigabits/Second",
        "Terabits/Second",
        "Count/Second",
        "None",
    ];
    let top = doc
        .as_object()
        .unwrap_or_else(|| panic!("not a JSON object: {doc}"));
    let aws = top["_aws"]
        .as_object()
        .unwrap_or_else(|| panic!("_aws is not an object: {doc}"));
    let ts = aws
        .get("Timestamp")
        .and_then(|t| t.as_i64())
        .unwrap_or_else(|| panic!("_aws.Timestamp is not an integer: {doc}"));
    let now = chrono::Utc::now().timestamp_millis();
    assert!(
        (ts - now).abs() < 86_400_000,
        "_aws.Timestamp {ts} is not epoch milliseconds near now ({now})"
    );
    let directives = aws
        .get("CloudWatchMetrics")
        .and_then(|d| d.as_array())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| panic!("_aws.CloudWatchMetrics is not a non-empty array: {doc}"));
    assert_eq!(
        directives.len(),
        1,
        "one directive per document here: {doc}"
    );
    let directive = &directives[0];
    let namespace = directive["Namespace"]
        .as_str()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| panic!("Namespace is not a non-empty string: {doc}"))
        .to_owned();
    let dimension_sets: Vec<Vec<String>> = directive["Dimensions"]
        .as_array()
        .unwrap_or_else(|| panic!("Dimensions is not an array: {doc}"))
        .iter()
        .map(|set| {
            let set = set
                .as_array()
                .unwrap_or_else(|| panic!("a dimension set is not an array: {doc}"));
            assert!(set.len() <= 30, "more than 30 dimensions in a set: {doc}");
            set.iter()
                .map(|d| {
                    let name = d
                        .as_str()
                        .unwrap_or_else(|| panic!("a dimension name is not a string: {doc}"));
                    assert!(
                        top.get(name).is_some_and(|v| v.is_string()),
                        "dimension {name} is not a top-level string: {doc}"
                    );
                    name.to_owned()
                })
                .collect()
        })
        .collect();
    let definitions = directive["Metrics"]
        .as_array()
        .unwrap_or_else(|| panic!("Metrics is not an array: {doc}"));
    assert!(definitions.len() <= 100, "more than 100 metrics: {doc}");
    let mut metrics = std::collections::BTreeMap::new();
    for m in definitions {
        let name = m["Name"]
            .as_str()
            .unwrap_or_else(|| panic!("a metric Name is not a string: {doc}"));
        let unit = match m.get("Unit") {
            None => "None",
            Some(u) => u
                .as_str()
                .filter(|u| UNITS.contains(u))
                .unwrap_or_else(|| panic!("metric {name} has an unknown Unit {u}: {doc}")),
        };
        let value = match top.get(name) {
            Some(serde_json::Value::Number(n)) => n.as_f64(),
            Some(serde_json::Value::Array(values)) if values.len() <= 100 => {
                values.iter().map(|v| v.as_f64()).sum::<Option<f64>>()
            }
            _ => None,
        }
        .unwrap_or_else(|| {
            panic!("metric {name} is not a top-level number or array of numbers: {doc}")
        });
        metrics.insert(name.to_owned(), (unit.to_owned(), value));
    }
    EmfDocument {
        namespace,
        dimension_sets,
        metrics,
        document: doc.clone(),
    }
}
