//! SPDY/3 name/value header blocks and their zlib compression.
//!
//! A block is `count:32` then `len:32 name len:32 value` per header; names are lowercase,
//! several values of one name are joined by NUL. Blocks are zlib-compressed with the SPDY/3
//! dictionary, one compression context per direction for the whole connection, each block
//! ending with a sync flush (SPDY/3 §2.6.10).

use bytes::{BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The SPDY/3 header compression dictionary (SPDY/3 §2.6.10.1): 1423 bytes, zlib dictionary
/// id (Adler-32) 0xe3c6a7c2.
pub(crate) const SPDY3_DICTIONARY: &[u8] = b"\
    \0\0\0\x07options\0\0\0\x04head\0\0\0\x04post\0\0\0\x03put\0\0\0\x06delete\0\0\0\x05tra\
    ce\0\0\0\x06accept\0\0\0\x0eaccept-charset\0\0\0\x0faccept-encoding\0\0\0\x0faccept-lan\
    guage\0\0\0\x0daccept-ranges\0\0\0\x03age\0\0\0\x05allow\0\0\0\x0dauthorization\0\0\0\x0d\
    cache-control\0\0\0\x0aconnection\0\0\0\x0ccontent-base\0\0\0\x10content-encoding\0\0\0\
    \x10content-language\0\0\0\x0econtent-length\0\0\0\x10content-location\0\0\0\x0bcontent\
    -md5\0\0\0\x0dcontent-range\0\0\0\x0ccontent-type\0\0\0\x04date\0\0\0\x04etag\0\0\0\x06\
    expect\0\0\0\x07expires\0\0\0\x04from\0\0\0\x04host\0\0\0\x08if-match\0\0\0\x11if-modif\
    ied-since\0\0\0\x0dif-none-match\0\0\0\x08if-range\0\0\0\x13if-unmodified-since\0\0\0\x0d\
    last-modified\0\0\0\x08location\0\0\0\x0cmax-forwards\0\0\0\x06pragma\0\0\0\x12proxy-au\
    thenticate\0\0\0\x13proxy-authorization\0\0\0\x05range\0\0\0\x07referer\0\0\0\x0bretry-\
    after\0\0\0\x06server\0\0\0\x02te\0\0\0\x07trailer\0\0\0\x11transfer-encoding\0\0\0\x07\
    upgrade\0\0\0\x0auser-agent\0\0\0\x04vary\0\0\0\x03via\0\0\0\x07warning\0\0\0\x10www-au\
    thenticate\0\0\0\x06method\0\0\0\x03get\0\0\0\x06status\0\0\0\x06200 OK\0\0\0\x07versio\
    n\0\0\0\x08HTTP/1.1\0\0\0\x03url\0\0\0\x06public\0\0\0\x0aset-cookie\0\0\0\x0akeep-aliv\
    e\0\0\0\x06origin1001012012022052063003023033043053063074024054064074084094104114124134\
    14415416417502504505203 Non-Authoritative Information204 No Content301 Moved Permanentl\
    y400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 \
    Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec \
    00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,im\
    age/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatem\
    ax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";

/// Header names and values of one SYN_STREAM, SYN_REPLY or HEADERS frame, in arrival order.
/// Names are kept lowercase; a name may carry several values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(String, Vec<String>)>,
}

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `value` to `name` (lowercased), after any value it already has.
    pub fn insert(&mut self, name: &str, value: impl Into<String>) {
        let name = name.to_ascii_lowercase();
        let value = value.into();
        match self.entries.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(value),
            None => self.entries.push((name, vec![value])),
        }
    }

    /// Builder form of [`Headers::insert`].
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.insert(name, value);
        self
    }

    /// The first value of `name` (matched case-insensitively).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_all(name).first().map(String::as_str)
    }

    /// Every value of `name` (matched case-insensitively).
    pub fn get_all(&self, name: &str) -> &[String] {
        self.entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
            .unwrap_or(&[])
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The uncompressed name/value block.
    pub fn to_block(&self) -> Vec<u8> {
        let mut out = BytesMut::new();
        out.put_u32(self.entries.len() as u32);
        for (name, values) in &self.entries {
            out.put_u32(name.len() as u32);
            out.put_slice(name.as_bytes());
            let joined = values.join("\0");
            out.put_u32(joined.len() as u32);
            out.put_slice(joined.as_bytes());
        }
        out.to_vec()
    }

    /// Parses an uncompressed name/value block.
    pub fn from_block(block: &[u8]) -> Result<Headers, HeaderError> {
        let mut rest = block;
        let count = take_u32(&mut rest)? as usize;
        // Each entry needs at least its two length words: refuse absurd counts up front.
        if count > rest.len() / 8 {
            return Err(HeaderError::Malformed("header count larger than the block"));
        }
        let mut headers = Headers {
            entries: Vec::with_capacity(count),
        };
        for _ in 0..count {
            let name = take_str(&mut rest)?;
            if name.is_empty() {
                return Err(HeaderError::Malformed("empty header name"));
            }
            if name.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(HeaderError::UppercaseName(name.to_string()));
            }
            if headers.entries.iter().any(|(n, _)| n == name) {
                return Err(HeaderError::DuplicateName(name.to_string()));
            }
            let value = take_str(&mut rest)?;
            // An empty value is one empty string, as the Go client splits it.
            let values = value.split('\0').map(str::to_string).collect();
            headers.entries.push((name.to_string(), values));
        }
        if !rest.is_empty() {
            return Err(HeaderError::Malformed("bytes after the last header"));
        }
        Ok(headers)
    }
}

fn take_u32(rest: &mut &[u8]) -> Result<u32, HeaderError> {
    let (word, tail) = rest
        .split_first_chunk::<4>()
        .ok_or(HeaderError::Malformed("truncated header block"))?;
    *rest = tail;
    Ok(u32::from_be_bytes(*word))
}

fn take_str<'a>(rest: &mut &'a [u8]) -> Result<&'a str, HeaderError> {
    let len = take_u32(rest)? as usize;
    if len > rest.len() {
        return Err(HeaderError::Malformed("truncated header block"));
    }
    let (bytes, tail) = rest.split_at(len);
    *rest = tail;
    std::str::from_utf8(bytes).map_err(|_| HeaderError::Malformed("header is not UTF-8"))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("malformed header block: {0}")]
    Malformed(&'static str),
    #[error("header name {0:?} is not lowercase")]
    UppercaseName(String),
    #[error("header name {0:?} appears twice")]
    DuplicateName(String),
    #[error("header block decompresses to more than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("undecodable compressed header block: {0}")]
    Corrupt(String),
    #[error("compressing a header block: {0}")]
    Compress(String),
}

/// The sending direction's zlib context.
pub struct HeaderCompressor {
    zlib: Compress,
    dictionary_set: bool,
}

impl std::fmt::Debug for HeaderCompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeaderCompressor")
    }
}

impl Default for HeaderCompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderCompressor {
    pub fn new() -> Self {
        HeaderCompressor {
            zlib: Compress::new(Compression::default(), true),
            dictionary_set: false,
        }
    }

    /// Compresses one block, ending with a sync flush so the peer can decode it at once.
    pub fn compress(&mut self, headers: &Headers) -> Result<Bytes, HeaderError> {
        if !self.dictionary_set {
            self.zlib
                .set_dictionary(SPDY3_DICTIONARY)
                .map_err(|e| HeaderError::Compress(e.to_string()))?;
            self.dictionary_set = true;
        }
        let raw = headers.to_block();
        let mut out = Vec::with_capacity(raw.len() / 2 + 64);
        let mut input = &raw[..];
        loop {
            let before = self.zlib.total_in();
            self.zlib
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| HeaderError::Compress(e.to_string()))?;
            let consumed = (self.zlib.total_in() - before) as usize;
            input = &input[consumed..];
            // The flush is complete once all input is in and zlib left room in the output.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(Bytes::from(out));
            }
            out.reserve(out.capacity().max(64));
        }
    }
}

/// The receiving direction's zlib context, with a cap on the decompressed size of a block.
pub struct HeaderDecompressor {
    zlib: Decompress,
    max_block: usize,
    dictionary_set: bool,
}

impl std::fmt::Debug for HeaderDecompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeaderDecompressor")
    }
}

impl HeaderDecompressor {
    pub fn new(max_block: usize) -> Self {
        HeaderDecompressor {
            zlib: Decompress::new(true),
            max_block,
            dictionary_set: false,
        }
    }

    /// Decompresses and parses one block. Any error leaves the context unusable: the caller
    /// must end the connection.
    pub fn decompress(&mut self, block: &[u8]) -> Result<Headers, HeaderError> {
        let raw = self.inflate(block)?;
        Headers::from_block(&raw)
    }

    fn inflate(&mut self, block: &[u8]) -> Result<Vec<u8>, HeaderError> {
        let limit = self.max_block;
        let mut out = Vec::with_capacity((block.len() * 4).clamp(64, limit + 1));
        let mut input = block;
        loop {
            let (in_before, out_before) = (self.zlib.total_in(), out.len());
            let result = self
                .zlib
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            input = &input[(self.zlib.total_in() - in_before) as usize..];
            match result {
                Ok(Status::Ok | Status::StreamEnd) => {}
                Ok(Status::BufError) if out.len() < out.capacity() => {
                    return Err(HeaderError::Corrupt("truncated zlib data".into()));
                }
                Ok(Status::BufError) => {}
                Err(e) if e.needs_dictionary().is_some() && !self.dictionary_set => {
                    self.zlib
                        .set_dictionary(SPDY3_DICTIONARY)
                        .map_err(|e| HeaderError::Corrupt(e.to_string()))?;
                    self.dictionary_set = true;
                    continue;
                }
                Err(e) => return Err(HeaderError::Corrupt(e.to_string())),
            }
            if out.len() > limit {
                return Err(HeaderError::TooLarge { limit });
            }
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
            if out.len() == out_before && out.len() < out.capacity() {
                // No progress with room to spare: the input cannot be decoded further.
                return Err(HeaderError::Corrupt("zlib made no progress".into()));
            }
            if out.len() == out.capacity() {
                if out.len() > limit {
                    return Err(HeaderError::TooLarge { limit });
                }
                let grow = out.capacity().min(limit + 1 - out.len());
                out.reserve_exact(grow);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Produced by Python's zlib: compressobj(level=9, zdict=<SPDY/3 dictionary>), each block
    // followed by flush(Z_SYNC_FLUSH), both blocks from the same compressor object.
    // Block 1: {"streamtype": "error"}; block 2: {"streamtype": "stdout", "x-multi": "a\0b"}.
    const PY_BLOCK_1: &[u8] = &[
        0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2, 0x02, 0xa6, 0x23, 0x46, 0x70, 0x3a, 0x2b, 0x29, 0x4a,
        0x4d, 0xcc, 0x85, 0x16, 0x25, 0xac, 0xa9, 0xa0, 0x80, 0x06, 0x00, 0x00, 0x00, 0xff, 0xff,
    ];
    const PY_BLOCK_2: &[u8] = &[
        0x02, 0x65, 0x1c, 0x0c, 0x29, 0x60, 0x62, 0x4e, 0xc9, 0x07, 0x97, 0xd1, 0xec, 0x15, 0xba,
        0xb9, 0xa5, 0x39, 0x25, 0x99, 0xe0, 0x82, 0x94, 0x21, 0x09, 0x00, 0x00, 0x00, 0xff, 0xff,
    ];

    #[test]
    fn dictionary_is_the_spdy3_one() {
        assert_eq!(SPDY3_DICTIONARY.len(), 1423);
        let mut adler = Decompress::new(true);
        // A zlib header naming the dictionary id makes the decoder ask for it.
        let header = [0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2];
        let err = adler
            .decompress_vec(&header, &mut Vec::with_capacity(16), FlushDecompress::Sync)
            .unwrap_err();
        assert_eq!(err.needs_dictionary(), Some(0xe3c6_a7c2));
        assert_eq!(adler.set_dictionary(SPDY3_DICTIONARY).unwrap(), 0xe3c6_a7c2);
    }

    #[test]
    fn blocks_from_a_reference_zlib_decode_in_one_context() {
        let mut d = HeaderDecompressor::new(64 * 1024);
        let first = d.decompress(PY_BLOCK_1).unwrap();
        assert_eq!(first, Headers::new().with("streamtype", "error"));
        let second = d.decompress(PY_BLOCK_2).unwrap();
        assert_eq!(second.get("streamtype"), Some("stdout"));
        assert_eq!(second.get_all("x-multi"), ["a", "b"]);
        assert_eq!(second.len(), 2);
    }

    #[test]
    fn second_block_alone_needs_the_shared_context() {
        let mut d = HeaderDecompressor::new(64 * 1024);
        assert!(d.decompress(PY_BLOCK_2).is_err());
    }

    #[test]
    fn compression_round_trips_across_many_blocks() {
        let mut c = HeaderCompressor::new();
        let mut d = HeaderDecompressor::new(64 * 1024);
        for i in 0..50 {
            let h = Headers::new()
                .with(
                    "streamtype",
                    ["stdin", "stdout", "stderr", "error", "resize"][i % 5],
                )
                .with("Port", (8000 + i).to_string())
                .with("requestid", i.to_string())
                .with("multi", "")
                .with("multi", "two");
            let block = c.compress(&h).unwrap();
            assert!(block.ends_with(&[0, 0, 0xff, 0xff]), "sync flush marker");
            let got = d.decompress(&block).unwrap();
            assert_eq!(got, h);
            assert_eq!(got.get("port"), Some((8000 + i).to_string().as_str()));
            assert_eq!(got.get_all("multi"), ["", "two"]);
        }
        let empty = c.compress(&Headers::new()).unwrap();
        assert_eq!(d.decompress(&empty).unwrap(), Headers::new());
    }

    #[test]
    fn our_blocks_decode_with_a_fresh_reference_context() {
        // The first block of a connection starts with a zlib header naming the dictionary.
        let mut c = HeaderCompressor::new();
        let block = c
            .compress(&Headers::new().with("streamtype", "error"))
            .unwrap();
        assert_eq!(&block[2..6], &[0xe3, 0xc6, 0xa7, 0xc2]);
        assert_eq!(block[1] & 0x20, 0x20, "FDICT set");
    }

    #[test]
    fn oversized_block_is_refused() {
        let mut c = HeaderCompressor::new();
        let big = Headers::new().with("x", "a".repeat(100_000));
        let block = c.compress(&big).unwrap();
        assert!(block.len() < 2000, "compresses well: {}", block.len());
        let mut d = HeaderDecompressor::new(64 * 1024);
        assert_eq!(
            d.decompress(&block),
            Err(HeaderError::TooLarge { limit: 64 * 1024 })
        );
    }

    #[test]
    fn garbage_and_truncated_blocks_are_errors() {
        let mut d = HeaderDecompressor::new(64 * 1024);
        assert!(matches!(
            d.decompress(b"\x00\x01garbage"),
            Err(HeaderError::Corrupt(_))
        ));
        let mut d = HeaderDecompressor::new(64 * 1024);
        assert!(d.decompress(&PY_BLOCK_1[..PY_BLOCK_1.len() - 8]).is_err());
    }

    #[test]
    fn malformed_plain_blocks_are_errors() {
        let one = |name: &[u8], value: &[u8]| {
            let mut b = vec![0, 0, 0, 1];
            b.extend((name.len() as u32).to_be_bytes());
            b.extend(name);
            b.extend((value.len() as u32).to_be_bytes());
            b.extend(value);
            b
        };
        assert_eq!(
            Headers::from_block(&one(b"Port", b"80")),
            Err(HeaderError::UppercaseName("Port".into()))
        );
        assert_eq!(
            Headers::from_block(&one(b"", b"80")),
            Err(HeaderError::Malformed("empty header name"))
        );
        let mut twice = one(b"port", b"80");
        twice[3] = 2;
        twice.extend(&one(b"port", b"81")[4..]);
        assert_eq!(
            Headers::from_block(&twice),
            Err(HeaderError::DuplicateName("port".into()))
        );
        let mut trailing = one(b"port", b"80");
        trailing.push(0);
        assert!(Headers::from_block(&trailing).is_err());
        let block = one(b"port", b"80");
        assert!(Headers::from_block(&block[..block.len() - 1]).is_err());
        assert!(Headers::from_block(&[0, 0, 0x10, 0]).is_err());
    }
}
