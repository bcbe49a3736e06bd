#!/usr/bin/env node
// Test launcher around an npm S3 server (s3rver 3.7.1 or @20minutes/s3rver 5.0.0).
//   node s3server.js --dir DIR --bucket models [--impl s3rver|20m] [--port 0]
//                    [--log requests.jsonl] [--cond-put] [--silent]
// Prints "READY http://127.0.0.1:PORT" on stdout once listening.
// Extras (a middleware put in front of the server, not part of it):
//   * one JSON line per request to --log: {t, method, path, query, status, range, inm, im}
//   * GET /__stats -> {"GET /models/key": n, ...}; POST /__reset clears the counters
//   * --cond-put: PutObject / CompleteMultipartUpload honour If-Match and If-None-Match ("*" or
//     an ETag) and answer 412 PreconditionFailed like S3 does; checks are serialised per key.
//   * --verify-sigv4: recompute every header-signed request's SigV4 signature with AWS's own
//     signer (@smithy/signature-v4, shipped with @aws-sdk/client-s3) and answer 403
//     SignatureDoesNotMatch (body shows our canonical request) on mismatch. S3 rules: canonical
//     URI = each path segment decoded then RFC 3986-encoded, no dot-segment normalisation;
//     canonical query = decoded params re-encoded and sorted.
//   * POST /__fault?path=/models/key&mode=truncate|503&bytes=N&times=K : the next K GETs of that path
//     either send headers + N body bytes and then reset the connection, or answer 503 SlowDown.
//   * --credentials AKID:SECRET (repeatable) adds keys; S3RVER:S3RVER always exists.
//   * aws-chunked bodies (x-amz-content-sha256: STREAMING-*) are refused with 501 on s3rver 3.x,
//     which would otherwise store the chunk framing as object bytes.
'use strict';
const fs = require('fs');
const path = require('path');

const args = process.argv.slice(2);
const opt = { impl: 's3rver', port: 0, buckets: [], dir: null, log: null, condPut: false, silent: false, verify: false, creds: { S3RVER: 'S3RVER' } };
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--impl') opt.impl = args[++i];
  else if (a === '--port') opt.port = Number(args[++i]);
  else if (a === '--dir') opt.dir = args[++i];
  else if (a === '--bucket') opt.buckets.push(args[++i]);
  else if (a === '--log') opt.log = args[++i];
  else if (a === '--cond-put') opt.condPut = true;
  else if (a === '--silent') opt.silent = true;
  else if (a === '--verify-sigv4') opt.verify = true;
  else if (a === '--credentials') { const [k, ...v] = args[++i].split(':'); opt.creds[k] = v.join(':'); }
  else { console.error('unknown arg', a); process.exit(2); }
}
if (!opt.dir) { console.error('--dir required'); process.exit(2); }
fs.mkdirSync(opt.dir, { recursive: true });

const pkg = opt.impl === '20m' ? '@20minutes/s3rver' : 's3rver';
const S3rver = require(pkg);
const AWSAccount = require(`${pkg}/lib/models/account`);
for (const [k, v] of Object.entries(opt.creds)) AWSAccount.DUMMY_ACCOUNT.createKeyPair(k, v);
const { SignatureV4 } = require('@smithy/signature-v4');
const crypto = require('crypto');
class Sha256 { // the hash interface @smithy/signature-v4 expects, on node:crypto
  constructor(secret) { this.h = secret ? crypto.createHmac('sha256', secret) : crypto.createHash('sha256'); }
  update(d) { this.h.update(d); }
  async digest() { return new Uint8Array(this.h.digest()); }
}
const rfc3986 = s => encodeURIComponent(s).replace(/[!'()*]/g, c => '%' + c.charCodeAt(0).toString(16).toUpperCase());

// Returns null when the signature checks out, else a message with our canonical request.
async function verifySigV4(ctx) {
  const auth = ctx.get('authorization');
  if (!auth.startsWith('AWS4-HMAC-SHA256 ')) return null; // anonymous / presigned / v2: left to the server
  const parts = Object.fromEntries(auth.slice(17).split(',').map(x => x.trim().split('=')).map(([k, ...v]) => [k, v.join('=')]));
  const [akid, shortDate, region, service] = (parts.Credential || '').split('/');
  if (!ctx.req.headers['x-amz-content-sha256']) return 'MISSING_SHA';
  const secret = opt.creds[akid];
  if (secret === undefined) return `unknown access key ${akid}`;
  const signed = (parts.SignedHeaders || '').split(';');
  const headers = {};
  for (const h of signed) headers[h] = ctx.req.headers[h] === undefined ? '' : String(ctx.req.headers[h]);
  const rawUrl = ctx.req.url;
  const qi = rawUrl.indexOf('?');
  const rawPath = qi < 0 ? rawUrl : rawUrl.slice(0, qi);
  const path = rawPath.split('/').map(seg => rfc3986(decodeURIComponent(seg))).join('/');
  const query = {};
  if (qi >= 0) for (const kv of rawUrl.slice(qi + 1).split('&')) {
    if (!kv) continue;
    const eq = kv.indexOf('=');
    const k = decodeURIComponent(eq < 0 ? kv : kv.slice(0, eq)), v = eq < 0 ? '' : decodeURIComponent(kv.slice(eq + 1));
    query[k] = k in query ? [].concat(query[k], v) : v;
  }
  const signer = new SignatureV4({ credentials: { accessKeyId: akid, secretAccessKey: secret }, region, service, sha256: Sha256, uriEscapePath: false });
  const canonicalHeaders = {};
  for (const h of signed) canonicalHeaders[h] = headers[h].replace(/[\r\n]/g, ' ').replace(/[ \t]+/g, ' ').trim();
  const payload = ctx.req.headers['x-amz-content-sha256'] || 'UNSIGNED-PAYLOAD';
  const canonical = signer.createCanonicalRequest({ method: ctx.method, path, query, headers }, canonicalHeaders, payload);
  const longDate = ctx.get('x-amz-date');
  const scope = `${shortDate}/${region}/${service}/aws4_request`;
  const expect = await signer.getSignature(longDate, scope, signer.getSigningKey({ accessKeyId: akid, secretAccessKey: secret }, region, shortDate, service), canonical);
  if (!longDate.startsWith(shortDate)) return 'x-amz-date does not match credential scope date';
  return expect === parts.Signature ? null : `expected ${expect}, got ${parts.Signature}\n--- canonical request ---\n${canonical}`;
}
const server = new S3rver({
  address: '127.0.0.1',
  port: opt.port,
  directory: path.resolve(opt.dir),
  silent: opt.silent,
  vhostBuckets: false,
  configureBuckets: opt.buckets.map(name => ({ name, configs: [] })),
});

const counts = new Map();
const faults = new Map(); // path -> {mode, bytes, times}
const logFd = opt.log ? fs.openSync(opt.log, 'a') : null;
const locks = new Map(); // key -> promise tail, serialises conditional writes per object

async function withLock(key, fn) {
  const prev = locks.get(key) || Promise.resolve();
  let release;
  const mine = new Promise(r => (release = r));
  const tail = prev.then(() => mine);
  locks.set(key, tail);
  await prev;
  try { return await fn(); } finally { release(); if (locks.get(key) === tail) locks.delete(key); }
}

function s3error(ctx, status, code, message) {
  ctx.status = status;
  ctx.type = 'application/xml';
  ctx.body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message></Error>`;
}

async function front(ctx, next) {
  if (ctx.path === '/__stats') { ctx.type = 'application/json'; ctx.body = JSON.stringify(Object.fromEntries(counts)); return; }
  if (ctx.path === '/__reset' && ctx.method === 'POST') { counts.clear(); faults.clear(); ctx.status = 204; return; }
  if (ctx.path === '/__fault' && ctx.method === 'POST') {
    const q = ctx.query;
    faults.set(q.path, { mode: q.mode || 'truncate', bytes: Number(q.bytes || 0), times: Number(q.times || 1) });
    ctx.status = 204; return;
  }
  const fault = ctx.method === 'GET' ? faults.get(ctx.path) : undefined;
  if (fault && fault.times > 0) {
    if (--fault.times === 0) faults.delete(ctx.path);
    counts.set(`${ctx.method} ${ctx.path}`, (counts.get(`${ctx.method} ${ctx.path}`) || 0) + 1);
    if (fault.mode === '503') return s3error(ctx, 503, 'SlowDown', 'Please reduce your request rate.');
    await next();
    if (ctx.status !== 200 && ctx.status !== 206) return;
    const body = ctx.body;
    ctx.respond = false;                       // take over the raw response
    const res = ctx.res;
    res.writeHead(ctx.status, ctx.response.headers);
    let sent = 0;
    body.on('data', chunk => {
      const room = fault.bytes - sent;
      if (sent >= fault.bytes) return;
      const part = chunk.subarray(0, fault.bytes - sent);
      sent += part.length;
      if (sent >= fault.bytes) { body.destroy(); res.write(part, () => res.socket.destroy()); } else res.write(part);
    });
    body.on('end', () => res.socket.destroy());
    return;
  }
  const started = Date.now();
  const route = `${ctx.method} ${ctx.path}`;
  try {
    if (opt.impl !== '20m' && /^STREAMING-/.test(ctx.get('x-amz-content-sha256'))) {
      return s3error(ctx, 501, 'NotImplemented', 'aws-chunked uploads are not supported by s3rver 3.x; set requestChecksumCalculation: WHEN_REQUIRED');
    }
    if (opt.verify) {
      const bad = await verifySigV4(ctx);
      if (bad === 'MISSING_SHA') return s3error(ctx, 400, 'InvalidRequest', 'Missing required header for this request: x-amz-content-sha256');
      if (bad) { if (!opt.silent) console.error('SignatureDoesNotMatch:', bad); return s3error(ctx, 403, 'SignatureDoesNotMatch', bad.replace(/&/g, '&amp;').replace(/</g, '&lt;')); }
    }
    const m = /^\/([^/]+)\/(.+)$/.exec(ctx.path);
    const im = ctx.get('if-match'), inm = ctx.get('if-none-match');
    const isWrite = ctx.method === 'PUT' ? !('partNumber' in ctx.query) : ctx.method === 'POST' && 'uploadId' in ctx.query;
    if (opt.condPut && m && isWrite && (im || inm)) {
      const [, bucket, key] = m;
      await withLock(`${bucket}/${decodeURIComponent(key)}`, async () => {
        let etag = null;
        try { etag = (await ctx.store.getMetadata(bucket, decodeURIComponent(key))).etag; } catch (e) { etag = null; }
        const strip = s => s.trim().replace(/^W\//, '');
        const matches = v => v.split(',').map(strip).some(x => x === '*' ? etag !== null : x === etag);
        if (im && !matches(im)) return s3error(ctx, 412, 'PreconditionFailed', 'At least one of the pre-conditions you specified did not hold');
        if (inm && etag !== null && (strip(inm) === '*' || matches(inm))) return s3error(ctx, 412, 'PreconditionFailed', 'At least one of the pre-conditions you specified did not hold');
        await next();
      });
    } else {
      await next();
    }
  } catch (err) {
    ctx.status = err.status || err.statusCode || 500; // s3rver errors are rendered later by Koa
    throw err;
  } finally {
    counts.set(route, (counts.get(route) || 0) + 1);
    if (logFd !== null) {
      fs.writeSync(logFd, JSON.stringify({
        t: started, ms: Date.now() - started, method: ctx.method, path: ctx.path, query: ctx.querystring,
        status: ctx.status, range: ctx.get('range') || undefined, inm: ctx.get('if-none-match') || undefined,
        im: ctx.get('if-match') || undefined,
      }) + '\n');
    }
  }
}
server.middleware.unshift(front); // Koa composes middleware when listen() builds the callback

server.run().then(({ port }) => {
  process.stdout.write(`READY http://127.0.0.1:${port}\n`);
}, err => { console.error(err); process.exit(1); });
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close().then(() => process.exit(0), () => process.exit(0)));
