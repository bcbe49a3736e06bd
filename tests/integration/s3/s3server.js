#!/usr/bin/env node
// S3-compatible server for pilotlight's integration tests: s3rver 3.7.1 (npm) on the local
// filesystem, with a front middleware that makes it strict enough to test a real S3 client
// against, counts what it was asked, and injects faults.
//
//   node s3server.js --dir DIR [--bucket NAME]... [--port 0] [--address 127.0.0.1]
//        [--credentials AKID:SECRET[:TOKEN]]... [--verify-sigv4] [--allow-anonymous]
//        [--cond-put] [--log requests.jsonl] [--silent] [--watch-stdin]
//
// Path-style addressing only (http://127.0.0.1:PORT/bucket/key). Prints "READY http://ADDRESS:PORT" on stdout once the buckets exist and it is listening.
// Credentials default to S3RVER:S3RVER when no --credentials is given. --watch-stdin exits
// when stdin closes (so a killed test runner does not leave the server behind).
//
// What the front middleware adds to s3rver:
//   * --verify-sigv4: every request must be signed. Header-signed (Authorization:
//     AWS4-HMAC-SHA256) and presigned (X-Amz-Algorithm=AWS4-HMAC-SHA256) requests have their
//     signature recomputed with AWS's own signer (@smithy/signature-v4); a mismatch answers 403
//     SignatureDoesNotMatch (the XML body and stderr show our canonical request). Anonymous
//     requests answer 403 AccessDenied (unless --allow-anonymous), unknown keys 403
//     InvalidAccessKeyId, a missing x-amz-content-sha256 400, x-amz-date more than 15 min off
//     403 RequestTimeTooSkewed, an expired presigned URL 403 AccessDenied, a session token that
//     differs from --credentials' TOKEN 400 InvalidToken. S3's canonical URI: each path segment
//     decoded then RFC 3986-encoded, no dot-segment normalisation; query re-encoded and sorted.
//   * Payload integrity: a PUT body (object or part) whose sha256 differs from a hex
//     x-amz-content-sha256 answers 400 XAmzContentSHA256Mismatch, one whose MD5 differs from
//     Content-MD5 400 BadDigest; neither is stored. aws-chunked bodies (STREAMING-*) answer 501.
//   * Atomic writes (always on): s3rver writes an object in place (a reader can see half of it,
//     or a new body with the old ETag, and an interrupted PUT leaves a torn object). Here the
//     body goes to a temporary file that is renamed over the object under a per-key lock that
//     readers also take while they open it: a GET sees the old object or the new one, as on S3.
//   * --cond-put: PutObject / CompleteMultipartUpload honour If-Match (ETag or "*") and
//     If-None-Match: * like S3 (412 PreconditionFailed); every write of a key is serialised.
//   * Multipart: CompleteMultipartUpload checks the parts as S3 does (ascending, each ETag as
//     uploaded: InvalidPartOrder / InvalidPart; all but the last >= 5 MiB: EntityTooSmall) and
//     the object's ETag is S3's "md5(part MD5s)-N" (s3rver gave the MD5 of the whole object).
//   * ListObjectsV2 (list-type=2) is answered here: s3rver misses common prefixes of "folders"
//     that hold only sub-folders, never counts prefixes against max-keys (so they never
//     paginate) and ignores encoding-type=url. Keys sort by UTF-8 bytes; continuation tokens
//     are opaque base64 with '+', '/' and '=' in them (a client must URL-encode them).
//     ListObjects V1 is still s3rver's own.
//   * Suffix ranges (Range: bytes=-N) serve the last N bytes (s3rver served the first N+1).
//   * Conditional reads: GET/HEAD with If-None-Match (quoted ETag as sent by the server, a
//     list, W/ or "*") answer 304 with ETag and Last-Modified; If-Match that does not match
//     answers 412.
//   * Request records: GET /__stats -> {"requests": [record...], "counts": {"GET /b/k 200": n}}
//     record = {seq, t, ms, method, path, bucket, key, query, status, error?, range?,
//               if_none_match?, if_match?, req_length?, auth, akid?, token?, length?, fault?,
//               sent?, canonical_request?}  (absent fields are left out)
//     path/key are percent-decoded; key is "" for bucket-level requests (listings), bucket ""
//     for the service. status is the status line sent. A record is complete before the
//     client can see the response. POST /__reset clears records and faults. --log appends
//     each record as a JSON line.
//   * Faults: POST /__fault?path=/bucket/key&mode=M[&times=K][&method=GET][&bytes=N][&ms=N]
//     queues a fault for the next K (default 1; -1 = until reset) requests of that method
//     (default GET; "*" = any) on that path; faults on one path apply in the order queued.
//       mode=truncate  send the status line and headers (full Content-Length) and N body bytes,
//                      then close the connection: close=fin (default) ends it in order (only
//                      a client that checks Content-Length notices), close=rst resets it
//                      (the peer may lose bytes already sent). Consumed only by a 200/206.
//       mode=503 | 500 answer 503 SlowDown / 500 InternalError (any 3-digit status works).
//       mode=delay     wait ms before handling the request (then handle it normally).
//       mode=reset     close the connection without answering.
//     GET /__faults lists the pending faults; POST /__reset clears them.
'use strict';
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const { pipeline } = require('stream/promises');
const { Transform } = require('stream');
const { AsyncLocalStorage } = require('async_hooks');

const args = process.argv.slice(2);
const opt = {
  port: 0, address: '127.0.0.1', buckets: [], dir: null, log: null, condPut: false, silent: false,
  verify: false, allowAnonymous: false, watchStdin: false, creds: {},
};
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  const value = () => { if (i + 1 >= args.length) { console.error(`${a} needs a value`); process.exit(2); } return args[++i]; };
  if (a === '--port') opt.port = Number(value());
  else if (a === '--address') opt.address = value();
  else if (a === '--dir') opt.dir = value();
  else if (a === '--bucket') opt.buckets.push(value());
  else if (a === '--log') opt.log = value();
  else if (a === '--cond-put') opt.condPut = true;
  else if (a === '--silent') opt.silent = true;
  else if (a === '--verify-sigv4') opt.verify = true;
  else if (a === '--allow-anonymous') opt.allowAnonymous = true;
  else if (a === '--watch-stdin') opt.watchStdin = true;
  else if (a === '--credentials') {
    const [k, secret, token] = value().split(':');
    if (!k || !secret) { console.error('--credentials wants AKID:SECRET[:TOKEN]'); process.exit(2); }
    opt.creds[k] = { secret, token };
  } else { console.error('unknown arg', a); process.exit(2); }
}
if (!opt.dir) { console.error('--dir required'); process.exit(2); }
if (Object.keys(opt.creds).length === 0) opt.creds.S3RVER = { secret: 'S3RVER' };
fs.mkdirSync(opt.dir, { recursive: true });

const S3rver = require('s3rver');
const AWSAccount = require('s3rver/lib/models/account');
const S3Error = require('s3rver/lib/models/error');
const FilesystemStore = require('s3rver/lib/stores/filesystem');
for (const [k, c] of Object.entries(opt.creds)) AWSAccount.DUMMY_ACCOUNT.createKeyPair(k, c.secret);
const { SignatureV4 } = require('@smithy/signature-v4');

function s3err(code, message, status, detail) {
  const e = new S3Error(code, message, detail || {});
  if (status) { e.status = status; e.expose = status < 500; }
  return e;
}

// ---------------------------------------------------------------------------------------
// Per-key reader/writer lock: writers commit (rename + metadata) alone; readers hold it while
// they read metadata and open the file, then stream from the open descriptor without it.
// ---------------------------------------------------------------------------------------
const rw = new Map();
function pump(k, s) {
  while (s.q.length) {
    const w = s.q[0];
    if (w.excl) {
      if (s.readers === 0 && !s.writer) { s.writer = true; s.q.shift(); w.resolve(); }
      break;
    }
    if (s.writer) break;
    s.readers++; s.q.shift(); w.resolve();
  }
  if (!s.readers && !s.writer && !s.q.length && rw.get(k) === s) rw.delete(k);
}
async function locked(k, excl, fn) {
  let s = rw.get(k);
  if (!s) { s = { readers: 0, writer: false, q: [] }; rw.set(k, s); }
  await new Promise(resolve => { s.q.push({ excl, resolve }); pump(k, s); });
  try { return await fn(); } finally { if (excl) s.writer = false; else s.readers--; pump(k, s); }
}
const lockKey = (bucket, key) => `${bucket}\u0000${key}`;

// The request being handled (payload checks inside the store need its headers).
const als = new AsyncLocalStorage();

// Streams `content` to a temporary file next to `finalPath` and returns {tmp, size, md5, md5raw}.
// When `content` is the request body, checks it against x-amz-content-sha256 / Content-MD5.
async function receive(content, finalPath) {
  await fs.promises.mkdir(path.dirname(finalPath), { recursive: true });
  const tmp = `${finalPath}.${crypto.randomBytes(6).toString('hex')}.uploading`;
  const md5 = crypto.createHash('md5'), sha = crypto.createHash('sha256');
  let size = 0;
  try {
    const source = Buffer.isBuffer(content) ? [content] : content;
    await pipeline(source, new Transform({
      transform(chunk, enc, cb) { md5.update(chunk); sha.update(chunk); size += chunk.length; cb(null, chunk); },
    }), fs.createWriteStream(tmp));
    const req = als.getStore();
    const md5raw = md5.digest();
    if (req && content === req) {
      const want = String(req.headers['x-amz-content-sha256'] || '');
      const got = sha.digest('hex');
      if (/^[0-9a-fA-F]{64}$/.test(want) && want.toLowerCase() !== got) {
        throw s3err('XAmzContentSHA256Mismatch', "The provided 'x-amz-content-sha256' header does not match what was computed.", 400,
          { ClientComputedContentSHA256: want, S3ComputedContentSHA256: got });
      }
      const cmd5 = req.headers['content-md5'];
      if (cmd5 && cmd5 !== md5raw.toString('base64')) {
        throw s3err('BadDigest', 'The Content-MD5 you specified did not match what we received.', 400);
      }
    }
    return { tmp, size, md5: md5raw.toString('hex'), md5raw };
  } catch (err) {
    await fs.promises.rm(tmp, { force: true });
    throw err;
  }
}

// Renames the received file over the object and writes its metadata, alone on that key.
async function commit(store, bucket, key, tmp, metadata, etag) {
  const objectPath = store.getResourcePath(bucket, key, 'object');
  await locked(lockKey(bucket, key), true, async () => {
    await fs.promises.rename(tmp, objectPath);
    await store.putMetadata(bucket, key, metadata, etag);
  });
}

FilesystemStore.prototype.putObject = async function putObject(object) {
  const objectPath = this.getResourcePath(object.bucket, object.key, 'object');
  const { tmp, size, md5 } = await receive(object.content, objectPath);
  await commit(this, object.bucket, object.key, tmp, object.metadata, md5);
  return { size, md5 };
};
FilesystemStore.prototype.putPart = async function putPart(bucket, uploadId, partNumber, content) {
  const uploadDir = path.join(this.getResourcePath(bucket, undefined, 'uploads'), uploadId);
  if (!fs.existsSync(uploadDir)) throw s3err('NoSuchUpload', 'The specified upload does not exist.', 404, { UploadId: uploadId });
  const n = Number(partNumber);
  if (!(Number.isInteger(n) && n >= 1 && n <= 10000)) throw s3err('InvalidArgument', 'Part number must be an integer between 1 and 10000, inclusive', 400);
  const partPath = path.join(uploadDir, String(n));
  const { tmp, size, md5 } = await receive(content, partPath);
  await fs.promises.rename(tmp, partPath);
  await fs.promises.writeFile(`${partPath}.md5`, md5);
  return { size, md5 };
};
// As S3: parts listed in ascending order, each with the ETag its upload returned, all but the
// last at least 5 MiB; the object's ETag is md5(concatenated part MD5s)-N.
const MIN_PART = 5 * 1024 * 1024;
FilesystemStore.prototype.putObjectMultipart = async function putObjectMultipart(bucket, uploadId, parts) {
  const uploadDir = path.join(this.getResourcePath(bucket, undefined, 'uploads'), uploadId);
  let key, metadata;
  try {
    key = await fs.promises.readFile(path.join(uploadDir, 'key'), 'utf8');
    metadata = JSON.parse(await fs.promises.readFile(path.join(uploadDir, 'metadata'), 'utf8'));
  } catch (e) {
    if (e.code === 'ENOENT') throw s3err('NoSuchUpload', 'The specified upload does not exist.', 404, { UploadId: uploadId });
    throw e;
  }
  const md5s = [];
  for (let i = 0; i < parts.length; i++) {
    const { number, etag } = parts[i];
    if (i > 0 && !(number > parts[i - 1].number)) throw s3err('InvalidPartOrder', 'The list of parts was not in ascending order.', 400);
    const partPath = path.join(uploadDir, String(number));
    let md5, size;
    try {
      md5 = await fs.promises.readFile(`${partPath}.md5`, 'utf8');
      size = (await fs.promises.stat(partPath)).size;
    } catch (e) { md5 = null; }
    if (md5 === null || md5 !== etag) {
      throw s3err('InvalidPart', 'One or more of the specified parts could not be found or its entity tag did not match.', 400, { PartNumber: number, ETag: etag });
    }
    if (i < parts.length - 1 && size < MIN_PART) {
      throw s3err('EntityTooSmall', 'Your proposed upload is smaller than the minimum allowed object size.', 400, { PartNumber: number, ProposedSize: size, MinSizeAllowed: MIN_PART });
    }
    md5s.push(Buffer.from(md5, 'hex'));
  }
  const S3Object = require('s3rver/lib/models/object');
  const { concatStreams } = require('s3rver/lib/utils');
  const object = new S3Object(bucket, key, concatStreams(parts.map(p => fs.createReadStream(path.join(uploadDir, String(p.number))))), metadata);
  const objectPath = this.getResourcePath(bucket, key, 'object');
  const { tmp, size } = await receive(object.content, objectPath);
  const etag = `${crypto.createHash('md5').update(Buffer.concat(md5s)).digest('hex')}-${parts.length}`;
  await commit(this, bucket, key, tmp, object.metadata, etag);
  await fs.promises.rm(uploadDir, { recursive: true, force: true });
  return { size, md5: etag };
};
const originalGetObject = FilesystemStore.prototype.getObject;
FilesystemStore.prototype.getObject = function getObject(bucket, key, options) {
  return locked(lockKey(bucket, key), false, () => originalGetObject.call(this, bucket, key, options));
};
const originalDeleteObject = FilesystemStore.prototype.deleteObject;
FilesystemStore.prototype.deleteObject = function deleteObject(bucket, key) {
  return locked(lockKey(bucket, key), true, () => originalDeleteObject.call(this, bucket, key));
};
// Metadata (ETag, size) of an object as one consistent read, or null when it does not exist.
async function metadataOf(store, bucket, key) {
  return locked(lockKey(bucket, key), false, async () => {
    try { return await store.getMetadata(bucket, key); } catch (e) { if (e.code === 'ENOENT') return null; throw e; }
  });
}

// ---------------------------------------------------------------------------------------
// ListObjectsV2, answered here: s3rver derives common prefixes only from objects one level
// below the prefix (a "folder" holding only sub-folders is missing), does not count common
// prefixes against max-keys (so they never paginate) and ignores encoding-type=url.
// Here: keys sorted by UTF-8 bytes, KeyCount and MaxKeys count keys and prefixes, opaque
// continuation tokens (base64 with '+', '/' and '=' in them, to exercise URL encoding).
// ---------------------------------------------------------------------------------------
const OBJECT_SUFFIX = '._S3rver_object';
function allKeys(store, bucket) {
  const root = store.getBucketPath(bucket);
  const out = [];
  const walk = (dir, rel) => {
    for (const ent of fs.readdirSync(dir, { withFileTypes: true })) {
      if (ent.isDirectory()) {
        if (rel === '' && ent.name === '._S3rver_uploads') continue;
        walk(path.join(dir, ent.name), rel + ent.name + '/');
      } else if (ent.name.endsWith(OBJECT_SUFFIX)) out.push(rel + ent.name.slice(0, -OBJECT_SUFFIX.length));
    }
  };
  walk(root, '');
  return out;
}
const byteCmp = (a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b));
const xmlEsc = v => String(v).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
function makeToken(entry, isPrefix) {
  let json = JSON.stringify({ a: entry, p: isPrefix });
  while ((json.length + 2) % 3 === 0) json += ' ';
  return Buffer.concat([Buffer.from([0xfb, 0xff]), Buffer.from(json)]).toString('base64');
}
function readToken(token) {
  try {
    const buf = Buffer.from(token, 'base64');
    if (buf[0] !== 0xfb || buf[1] !== 0xff) return null;
    const t = JSON.parse(buf.subarray(2).toString());
    return typeof t.a === 'string' ? t : null;
  } catch (e) { return null; }
}

async function listObjectsV2(ctx, bucket) {
  if (!(await ctx.store.getBucket(bucket))) return false; // s3rver answers NoSuchBucket
  const q = ctx.query;
  const one = v => (Array.isArray(v) ? v[0] : v);
  const prefix = one(q.prefix) || '', delimiter = one(q.delimiter) || '';
  let maxKeys = 1000;
  if (q['max-keys'] !== undefined) {
    if (!/^\d+$/.test(one(q['max-keys']))) throw s3err('InvalidArgument', 'Provided max-keys not an integer or within integer range', 400);
    maxKeys = Math.min(1000, Number(one(q['max-keys'])));
  }
  const urlEnc = one(q['encoding-type']) === 'url';
  if (q['encoding-type'] !== undefined && !urlEnc) throw s3err('InvalidArgument', 'Invalid Encoding Method specified in Request', 400);
  let after = one(q['start-after']) || '', afterPrefix = false;
  const token = one(q['continuation-token']);
  if (token !== undefined) {
    const t = readToken(token);
    if (!t) throw s3err('InvalidArgument', 'The continuation token provided is incorrect', 400, { ArgumentName: 'continuation-token' });
    after = t.a; afterPrefix = t.p;
  }
  const keys = allKeys(ctx.store, bucket).filter(k => k.startsWith(prefix)).sort(byteCmp);
  const contents = [], prefixes = [];
  let truncated = false, last = null, lastIsPrefix = false, lastCp = null;
  for (const k of keys) {
    if (byteCmp(k, after) <= 0) continue;
    if (afterPrefix && k.startsWith(after)) continue;
    if (delimiter) {
      const idx = k.indexOf(delimiter, prefix.length);
      if (idx >= 0) {
        const cp = k.slice(0, idx + delimiter.length);
        if (cp === lastCp) continue;
        if (contents.length + prefixes.length >= maxKeys) { truncated = true; break; }
        prefixes.push(cp); lastCp = cp; last = cp; lastIsPrefix = true;
        continue;
      }
    }
    if (contents.length + prefixes.length >= maxKeys) { truncated = true; break; }
    contents.push(k); last = k; lastIsPrefix = false;
  }
  if (maxKeys === 0) truncated = false;
  const enc = v => (urlEnc ? encodeURIComponent(v).replace(/%2F/g, '/') : v);
  const metas = await Promise.all(contents.map(k => metadataOf(ctx.store, bucket, k)));
  const x = ['<?xml version="1.0" encoding="UTF-8"?>', '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'];
  const el = (name, v) => x.push(`<${name}>${xmlEsc(v)}</${name}>`);
  el('Name', bucket);
  el('Prefix', enc(prefix));
  if (delimiter) el('Delimiter', enc(delimiter));
  el('MaxKeys', maxKeys);
  if (urlEnc) el('EncodingType', 'url');
  el('KeyCount', contents.length + prefixes.length);
  el('IsTruncated', truncated ? 'true' : 'false');
  if (token !== undefined) el('ContinuationToken', token);
  if (truncated) el('NextContinuationToken', makeToken(last, lastIsPrefix));
  if (q['start-after'] !== undefined) el('StartAfter', enc(one(q['start-after'])));
  contents.forEach((k, i) => {
    const m = metas[i];
    if (!m) return; // deleted while listing
    x.push('<Contents>');
    el('Key', enc(k));
    el('LastModified', new Date(m['last-modified']).toISOString());
    el('ETag', m.etag);
    el('Size', m['content-length']);
    if (one(q['fetch-owner']) === 'true') x.push(`<Owner><ID>${AWSAccount.DUMMY_ACCOUNT.id}</ID><DisplayName>${xmlEsc(AWSAccount.DUMMY_ACCOUNT.displayName)}</DisplayName></Owner>`);
    el('StorageClass', 'STANDARD');
    x.push('</Contents>');
  });
  for (const cp of prefixes) x.push(`<CommonPrefixes><Prefix>${xmlEsc(enc(cp))}</Prefix></CommonPrefixes>`);
  x.push('</ListBucketResult>');
  ctx.status = 200;
  ctx.type = 'application/xml';
  ctx.body = x.join('');
  return true;
}

// ---------------------------------------------------------------------------------------
// SigV4 verification
// ---------------------------------------------------------------------------------------
class Sha256 { // the hash interface @smithy/signature-v4 expects, on node:crypto
  constructor(secret) { this.h = secret ? crypto.createHmac('sha256', secret) : crypto.createHash('sha256'); }
  update(d) { this.h.update(d); }
  async digest() { return new Uint8Array(this.h.digest()); }
}
const rfc3986 = s => encodeURIComponent(s).replace(/[!'()*]/g, c => '%' + c.charCodeAt(0).toString(16).toUpperCase());
const amzDate = s => { // 20250101T000000Z -> ms since epoch, or NaN
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(s || '');
  return m ? Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]) : NaN;
};

function parseQuery(rawUrl) {
  const qi = rawUrl.indexOf('?');
  const query = {};
  if (qi >= 0) {
    for (const kv of rawUrl.slice(qi + 1).split('&')) {
      if (!kv) continue;
      const eq = kv.indexOf('=');
      const dec = s => decodeURIComponent(s.replace(/\+/g, '%20'));
      const k = dec(eq < 0 ? kv : kv.slice(0, eq)), v = eq < 0 ? '' : dec(kv.slice(eq + 1));
      query[k] = k in query ? [].concat(query[k], v) : v;
    }
  }
  return { rawPath: qi < 0 ? rawUrl : rawUrl.slice(0, qi), query };
}

// Throws an S3Error when the request is not properly signed; returns {auth, akid}.
async function verifySigV4(ctx) {
  const authz = ctx.get('authorization');
  const { rawPath, query } = parseQuery(ctx.req.url);
  const presigned = query['X-Amz-Algorithm'] !== undefined;
  if (!authz && !presigned) {
    if (opt.allowAnonymous) return { auth: 'anonymous' };
    throw s3err('AccessDenied', 'Access Denied (anonymous request: this server wants SigV4)', 403);
  }
  if (authz && presigned) throw s3err('InvalidArgument', 'Only one auth mechanism allowed', 400);
  let akid, shortDate, region, service, signedHeaders, signature, longDate, payload;
  if (authz) {
    if (!authz.startsWith('AWS4-HMAC-SHA256 ')) throw s3err('InvalidArgument', `unsupported authorization: ${authz.split(' ')[0]}`, 400);
    const parts = Object.fromEntries(authz.slice(17).split(',').map(x => x.trim().split('=')).map(([k, ...v]) => [k, v.join('=')]));
    [akid, shortDate, region, service] = (parts.Credential || '').split('/');
    signedHeaders = (parts.SignedHeaders || '').split(';');
    signature = parts.Signature;
    longDate = ctx.get('x-amz-date');
    if (!ctx.req.headers['x-amz-content-sha256']) throw s3err('InvalidRequest', 'Missing required header for this request: x-amz-content-sha256', 400);
    payload = ctx.req.headers['x-amz-content-sha256'];
    if (!signedHeaders.includes('host')) throw s3err('AccessDenied', 'host must be a signed header', 403);
  } else {
    if (query['X-Amz-Algorithm'] !== 'AWS4-HMAC-SHA256') throw s3err('InvalidArgument', 'unsupported X-Amz-Algorithm', 400);
    [akid, shortDate, region, service] = String(query['X-Amz-Credential'] || '').split('/');
    signedHeaders = String(query['X-Amz-SignedHeaders'] || '').split(';');
    signature = query['X-Amz-Signature'];
    longDate = query['X-Amz-Date'];
    payload = ctx.req.headers['x-amz-content-sha256'] || 'UNSIGNED-PAYLOAD';
    const expires = Number(query['X-Amz-Expires']);
    if (!(expires >= 1 && expires <= 604800)) throw s3err('AuthorizationQueryParametersError', 'X-Amz-Expires must be 1..604800', 400);
    if (Date.now() > amzDate(longDate) + expires * 1000) throw s3err('AccessDenied', 'Request has expired', 403);
  }
  const cred = opt.creds[akid];
  if (!cred) throw s3err('InvalidAccessKeyId', `The AWS Access Key Id you provided does not exist in our records (${akid}).`, 403);
  const t = amzDate(longDate);
  if (Number.isNaN(t)) throw s3err('AccessDenied', `bad or missing x-amz-date: ${longDate}`, 403);
  if (!longDate.startsWith(shortDate)) throw s3err('SignatureDoesNotMatch', 'x-amz-date does not match the credential scope date', 403);
  if (authz && Math.abs(Date.now() - t) > 15 * 60 * 1000) {
    throw s3err('RequestTimeTooSkewed', 'The difference between the request time and the current time is too large.', 403);
  }
  const token = ctx.req.headers['x-amz-security-token'] || query['X-Amz-Security-Token'];
  if (cred.token !== undefined && token !== cred.token) throw s3err('InvalidToken', 'The provided token is malformed or otherwise invalid.', 400);
  const headers = {};
  for (const h of signedHeaders) headers[h] = ctx.req.headers[h] === undefined ? '' : String(ctx.req.headers[h]);
  const canonicalPath = rawPath.split('/').map(seg => rfc3986(decodeURIComponent(seg))).join('/');
  const signer = new SignatureV4({ credentials: { accessKeyId: akid, secretAccessKey: cred.secret }, region, service, sha256: Sha256, uriEscapePath: false });
  const canonicalHeaders = {};
  for (const h of signedHeaders) canonicalHeaders[h] = headers[h].replace(/[\r\n]/g, ' ').replace(/[ \t]+/g, ' ').trim();
  const canonical = signer.createCanonicalRequest({ method: ctx.method, path: canonicalPath, query, headers }, canonicalHeaders, payload);
  const scope = `${shortDate}/${region}/${service}/aws4_request`;
  const key = await signer.getSigningKey({ accessKeyId: akid, secretAccessKey: cred.secret }, region, shortDate, service);
  const expect = await signer.getSignature(longDate, scope, key, canonical);
  if (expect !== signature) {
    const detail = `expected ${expect}, got ${signature}\n--- canonical request (server) ---\n${canonical}\n---`;
    console.error(`SignatureDoesNotMatch ${ctx.method} ${ctx.req.url}: ${detail}`);
    const e = s3err('SignatureDoesNotMatch', 'The request signature we calculated does not match the signature you provided. Check your key and signing method.', 403,
      { CanonicalRequest: canonical, SignatureProvided: signature || '', SignatureExpected: expect });
    e.canonical = canonical;
    throw e;
  }
  return { auth: authz ? 'sigv4' : 'presigned', akid, token: token || undefined };
}

// ---------------------------------------------------------------------------------------
// Records, faults, conditional requests
// ---------------------------------------------------------------------------------------
const records = [];
let seq = 0;
const faults = new Map(); // decoded path -> [{mode, method, times, bytes, ms}], applied in order
const logFd = opt.log ? fs.openSync(opt.log, 'a') : null;
const writeLocks = new Map(); // key -> promise tail: serialises writes per object (--cond-put)

async function serialised(key, fn) {
  const prev = writeLocks.get(key) || Promise.resolve();
  let release;
  const mine = new Promise(r => (release = r));
  const tail = prev.then(() => mine);
  writeLocks.set(key, tail);
  await prev;
  try { return await fn(); } finally { release(); if (writeLocks.get(key) === tail) writeLocks.delete(key); }
}

function sendError(ctx, err) {
  if (ctx.state.rec) ctx.state.rec.error = err.code;
  ctx.status = err.status;
  ctx.type = 'application/xml';
  ctx.body = err.toXML();
}

const STATUS_CODES = { 500: 'InternalError', 503: 'SlowDown', 403: 'AccessDenied', 404: 'NoSuchKey', 400: 'BadRequest', 429: 'SlowDown' };

// A pending (unconsumed) fault of a mode other than truncate for this request, consumed.
function takeEarlyFault(method, p) {
  const list = faults.get(p);
  if (!list) return null;
  const i = list.findIndex(f => (f.method === '*' || f.method === method) && f.mode !== 'truncate');
  if (i < 0) return null;
  const f = list[i];
  if (f.times > 0 && --f.times === 0) list.splice(i, 1);
  if (!list.length) faults.delete(p);
  return f;
}
function takeTruncate(method, p, status) {
  if (status !== 200 && status !== 206) return null;
  const list = faults.get(p);
  if (!list) return null;
  const i = list.findIndex(f => (f.method === '*' || f.method === method) && f.mode === 'truncate');
  if (i < 0) return null;
  const f = list[i];
  if (f.times > 0 && --f.times === 0) list.splice(i, 1);
  if (!list.length) faults.delete(p);
  return f;
}

function etagMatches(list, etag) { // list: an If-(None-)Match value; etag: quoted, as stored
  const strip = s => s.trim().replace(/^W\//, '');
  return list.split(',').map(strip).some(x => x === '*' || x === etag);
}

const finished = new WeakSet();
function finish(rec, ctx) {
  finished.add(rec);
  rec.ms = Date.now() - rec.t;
  if (rec.status === undefined) rec.status = ctx.status;
  if (rec.length === undefined && ctx.response.length !== undefined && ctx.status !== 304) rec.length = ctx.response.length;
  records.push(rec);
  if (logFd !== null) fs.writeSync(logFd, JSON.stringify(rec) + '\n');
}

function control(ctx) {
  if (ctx.path === '/__stats' && ctx.method === 'GET') {
    const counts = {};
    for (const r of records) { const k = `${r.method} ${r.path} ${r.status}`; counts[k] = (counts[k] || 0) + 1; }
    ctx.type = 'application/json';
    ctx.body = JSON.stringify({ requests: records, counts });
    return true;
  }
  if (ctx.path === '/__reset' && ctx.method === 'POST') { records.length = 0; faults.clear(); ctx.status = 204; return true; }
  if (ctx.path === '/__faults' && ctx.method === 'GET') {
    ctx.type = 'application/json'; ctx.body = JSON.stringify(Object.fromEntries(faults)); return true;
  }
  if (ctx.path === '/__fault' && ctx.method === 'POST') {
    const q = ctx.query;
    const mode = String(q.mode || 'truncate');
    if (!q.path || !q.path.startsWith('/') || !(/^(truncate|delay|reset|\d{3})$/.test(mode))) {
      ctx.status = 400; ctx.body = 'want path=/bucket/key and mode=truncate|delay|reset|NNN\n'; return true;
    }
    const f = { mode, method: String(q.method || 'GET').toUpperCase(), times: Number(q.times || 1), bytes: Number(q.bytes || 0), ms: Number(q.ms || 0) };
    if (mode === 'truncate') f.close = q.close === 'rst' ? 'rst' : 'fin';
    if (!faults.has(q.path)) faults.set(q.path, []);
    faults.get(q.path).push(f);
    ctx.status = 204;
    return true;
  }
  return false;
}

async function front(ctx, next) {
  if (ctx.path.startsWith('/__') && control(ctx)) return;
  let decoded;
  try { decoded = decodeURIComponent(ctx.path); } catch (e) { decoded = ctx.path; }
  const m = /^\/([^/]*)(?:\/(.*))?$/.exec(decoded) || [];
  const bucket = m[1] || '', key = m[2] || '';
  const h = ctx.req.headers;
  const rec = {
    seq: ++seq, t: Date.now(), method: ctx.method, path: decoded, bucket, key, query: ctx.querystring,
    range: h.range, if_none_match: h['if-none-match'], if_match: h['if-match'],
    req_length: h['content-length'] !== undefined ? Number(h['content-length']) : undefined,
  };
  ctx.state.rec = rec;
  try {
    // Authentication first, as on S3: a bad signature is refused whatever else is asked.
    if (opt.verify) Object.assign(rec, await verifySigV4(ctx));
    else rec.auth = h.authorization ? 'unverified' : 'anonymous';

    const early = takeEarlyFault(ctx.method, decoded);
    if (early) {
      rec.fault = early.mode;
      if (early.mode === 'delay') await new Promise(r => setTimeout(r, early.ms));
      else if (early.mode === 'reset') {
        rec.status = 0; // no response
        ctx.respond = false;
        ctx.req.socket.destroy();
        return;
      } else {
        const st = Number(early.mode);
        return sendError(ctx, s3err(STATUS_CODES[st] || 'InjectedFault', `injected fault ${st}`, st));
      }
    }

    if (/^STREAMING-/.test(h['x-amz-content-sha256'] || '')) {
      return sendError(ctx, s3err('NotImplemented', 'aws-chunked uploads are not supported by this test server (s3rver 3.x stores the chunk framing)', 501));
    }

    const isObject = bucket && key;
    if (bucket && !key && ctx.method === 'GET' && ctx.query['list-type'] === '2' && await listObjectsV2(ctx, bucket)) return;

    const isRead = ctx.method === 'GET' || ctx.method === 'HEAD';
    const objectOp = ['acl', 'tagging', 'uploadId', 'uploads', 'legal-hold', 'retention', 'torrent', 'select'].some(q => q in ctx.query);
    const suffix = isObject && isRead && /^bytes=-(\d+)$/.exec(h.range || '');
    if (suffix) { // s3rver serves bytes 0..N of `bytes=-N`; S3 serves the last N bytes
      const meta = await metadataOf(ctx.store, bucket, key);
      if (meta) {
        const size = Number(meta['content-length']), n = Number(suffix[1]);
        if (n === 0) return sendError(ctx, s3err('InvalidRange', 'The requested range is not satisfiable', 416));
        ctx.req.headers.range = `bytes=${Math.max(0, size - n)}-`;
      }
    }
    if (isObject && isRead && !objectOp && (h['if-none-match'] || h['if-match'])) {
      const meta = await metadataOf(ctx.store, bucket, key);
      if (meta) {
        if (h['if-match'] && !etagMatches(h['if-match'], meta.etag)) {
          return sendError(ctx, s3err('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold', 412, { Condition: 'If-Match' }));
        }
        if (h['if-none-match'] && etagMatches(h['if-none-match'], meta.etag)) {
          ctx.status = 304;
          ctx.set('ETag', meta.etag);
          ctx.set('Last-Modified', meta['last-modified']);
          return;
        }
      }
      delete ctx.req.headers['if-none-match']; // decided here; s3rver's own check leaks a file descriptor
      delete ctx.req.headers['if-match'];
    }

    // PutObject (not UploadPart, not ?tagging/?acl) and CompleteMultipartUpload
    const isWrite = Boolean(isObject) && ((ctx.method === 'PUT' && !objectOp && !('partNumber' in ctx.query)) ||
      (ctx.method === 'POST' && 'uploadId' in ctx.query));
    const run = () => als.run(ctx.req, next);
    if (opt.condPut && isWrite) {
      const im = h['if-match'], inm = h['if-none-match'];
      await serialised(lockKey(bucket, key), async () => {
        if (im || inm) {
          const meta = await metadataOf(ctx.store, bucket, key);
          const etag = meta ? meta.etag : null;
          const fail = () => sendError(ctx, s3err('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold', 412, { Condition: im ? 'If-Match' : 'If-None-Match' }));
          if (im && (etag === null || !etagMatches(im, etag))) return fail();
          if (inm && etag !== null && etagMatches(inm, etag)) return fail();
        }
        await run();
      });
    } else {
      await run();
    }

    const trunc = ctx.body && typeof ctx.body.pipe === 'function' ? takeTruncate(ctx.method, decoded, ctx.status) : null;
    if (trunc) {
      const body = ctx.body, res = ctx.res;
      rec.fault = 'truncate';
      rec.status = ctx.status;
      rec.length = ctx.response.length;
      rec.sent = Math.min(trunc.bytes, rec.length === undefined ? Infinity : rec.length);
      finish(rec, ctx);
      ctx.respond = false; // take over the raw response
      res.writeHead(ctx.status, ctx.response.headers);
      res.flushHeaders();
      let sent = 0, done = false;
      const cut = () => {
        if (done) return;
        done = true;
        body.destroy();
        const sock = res.socket;
        if (!sock) return;
        if (trunc.close === 'rst') sock.write('', () => sock.resetAndDestroy());
        else sock.end(() => sock.destroy());
      };
      if (trunc.bytes <= 0) return cut();
      body.on('data', chunk => {
        if (done) return;
        const part = chunk.subarray(0, trunc.bytes - sent);
        sent += part.length;
        res.write(part);
        if (sent >= trunc.bytes) cut();
      });
      body.on('end', cut);
      body.on('error', cut);
      return;
    }
  } catch (err) {
    ctx.status = err.status || err.statusCode || 500; // rendered by s3rver's onerror
    rec.error = err.code;
    if (err.canonical) rec.canonical_request = err.canonical;
    throw err;
  } finally {
    if (!finished.has(rec)) finish(rec, ctx);
  }
}

const server = new S3rver({
  address: opt.address,
  port: opt.port,
  directory: path.resolve(opt.dir),
  silent: opt.silent,
  vhostBuckets: false,
  configureBuckets: opt.buckets.map(name => ({ name, configs: [] })),
});
server.middleware.unshift(front); // Koa composes middleware when listen() builds the callback

server.run().then(({ address, port }) => {
  process.stdout.write(`READY http://${address}:${port}\n`);
}, err => { console.error(err); process.exit(1); });
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
if (opt.watchStdin) {
  process.stdin.on('data', () => {});
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
}
