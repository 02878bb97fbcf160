//! The Prometheus remote-write 1.0 wire format: the few protobuf messages of
//! `prompb` (`WriteRequest`, `TimeSeries`, `Label`, `Sample`) declared with
//! prost's derive, with the field numbers of Prometheus' `types.proto` and
//! `remote.proto`, and the body encoding: protobuf, then snappy's block
//! format (not its framed format).

use prost::Message;

/// `prometheus.WriteRequest`. Field 3 (metadata) is not sent.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`: labels sorted by name, `__name__` among them;
/// samples oldest first.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Unix milliseconds.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// The HTTP headers of a remote-write 1.0 request.
pub const HEADERS: [(&str, &str); 3] = [
    ("Content-Encoding", "snappy"),
    ("Content-Type", "application/x-protobuf"),
    ("X-Prometheus-Remote-Write-Version", "0.1.0"),
];

/// The request body: `request` as protobuf, snappy-compressed (block format).
pub fn encode(request: &WriteRequest) -> Result<Vec<u8>, snap::Error> {
    snap::raw::Encoder::new().compress_vec(&request.encode_to_vec())
}

/// The inverse of [`encode`], for tests and for receivers in the lab.
pub fn decode(body: &[u8]) -> Result<WriteRequest, DecodeError> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(DecodeError::Snappy)?;
    WriteRequest::decode(raw.as_slice()).map_err(DecodeError::Protobuf)
}

/// Why a body is not a remote-write request.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not snappy block format: {0}")]
    Snappy(snap::Error),
    #[error("not a WriteRequest: {0}")]
    Protobuf(prost::DecodeError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_round_trips_and_matches_the_protobuf_layout() {
        let request = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![Label {
                    name: "__name__".into(),
                    value: "up".into(),
                }],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp: 1_700_000_000_000,
                }],
            }],
        };
        let body = encode(&request).unwrap();
        assert_eq!(decode(&body).unwrap(), request);
        // Field 1 (timeseries), wire type 2; inside, field 1 (labels), wire
        // type 2: the bytes protoc's code would write for the same message.
        let raw = request.encode_to_vec();
        assert_eq!(raw[0], 0x0a);
        assert_eq!(raw[2], 0x0a);
        // The sample: field 2 of TimeSeries, holding a double (field 1,
        // wire type 1) and an int64 (field 2, wire type 0).
        let sample = request.timeseries[0].samples[0].encode_to_vec();
        assert_eq!(sample[0], 0x09);
        assert_eq!(sample[9], 0x10);
        assert!(raw.ends_with(&sample));
        // Snappy's block format starts with the uncompressed length as a
        // varint; the framed format would start with its stream identifier.
        assert_eq!(usize::from(body[0]), raw.len());
    }
}
