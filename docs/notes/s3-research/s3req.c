/* Generic libcurl CURLOPT_AWS_SIGV4 request tool for experiments.
 * usage: s3req METHOD URL [-H "Header: v"]... [-f upload-file] [-o out-file]
 * env: AKID (S3RVER) SECRET (S3RVER) REGION (us-east-1) TOKEN PAYLOAD=sha|unsigned|none VERBOSE
 * Prints "HTTP <code>" and the ETag response header on stderr; body to stdout or -o. */
#include <curl/curl.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static size_t hdr_cb(char *b, size_t sz, size_t n, void *u) {
  (void)u; size_t k = sz * n;
  if (k > 5 && (!strncasecmp(b, "etag:", 5) || !strncasecmp(b, "content-range:", 14) || !strncasecmp(b, "last-modified:", 14)))
    fprintf(stderr, "  %.*s", (int)k, b);
  return k;
}

int main(int argc, char **argv) {
  if (argc < 3) { fprintf(stderr, "usage: %s METHOD URL [-H h]... [-f file] [-o out]\n", argv[0]); return 2; }
  const char *method = argv[1], *url = argv[2], *in = NULL, *out = NULL;
  struct curl_slist *hd = NULL;
  for (int i = 3; i < argc; i++) {
    if (!strcmp(argv[i], "-H") && i + 1 < argc) hd = curl_slist_append(hd, argv[++i]);
    else if (!strcmp(argv[i], "-f") && i + 1 < argc) in = argv[++i];
    else if (!strcmp(argv[i], "-o") && i + 1 < argc) out = argv[++i];
  }
  const char *akid = getenv("AKID") ? getenv("AKID") : "S3RVER";
  const char *sec = getenv("SECRET") ? getenv("SECRET") : "S3RVER";
  const char *region = getenv("REGION") ? getenv("REGION") : "us-east-1";
  const char *payload = getenv("PAYLOAD") ? getenv("PAYLOAD") : "sha";
  char provider[128], userpwd[512], h[256];
  snprintf(provider, sizeof provider, "aws:amz:%s:s3", region);
  snprintf(userpwd, sizeof userpwd, "%s:%s", akid, sec);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  CURL *c = curl_easy_init();
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_AWS_SIGV4, provider);
  curl_easy_setopt(c, CURLOPT_USERPWD, userpwd);
  if (getenv("TOKEN")) { snprintf(h, sizeof h, "x-amz-security-token: %s", getenv("TOKEN")); hd = curl_slist_append(hd, h); }

  FILE *fin = NULL; long fsz = 0; unsigned char md[32];
  SHA256_CTX sc; SHA256_Init(&sc);
  if (in) {
    fin = fopen(in, "rb"); if (!fin) { perror(in); return 2; }
    char buf[65536]; size_t k; while ((k = fread(buf, 1, sizeof buf, fin)) > 0) { SHA256_Update(&sc, buf, k); fsz += k; }
    rewind(fin);
  }
  SHA256_Final(md, &sc);
  if (!strcmp(payload, "unsigned")) hd = curl_slist_append(hd, "x-amz-content-sha256: UNSIGNED-PAYLOAD");
  else if (!strcmp(payload, "sha")) {
    int o = snprintf(h, sizeof h, "x-amz-content-sha256: ");
    for (int i = 0; i < 32; i++) o += snprintf(h + o, sizeof h - o, "%02x", md[i]);
    hd = curl_slist_append(hd, h);
  }
  if (!strcmp(method, "PUT") && fin) {
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_READDATA, fin);       /* default read callback = fread */
    curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)fsz);
  } else if (!strcmp(method, "POST")) {
    static char body[1 << 20]; size_t n = fin ? fread(body, 1, sizeof body, fin) : 0;
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)n);
    curl_easy_setopt(c, CURLOPT_COPYPOSTFIELDS, body);
  } else if (!strcmp(method, "HEAD")) curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  else if (strcmp(method, "GET")) curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, hd);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, hdr_cb);
  FILE *fo = out ? fopen(out, "wb") : stdout;
  curl_easy_setopt(c, CURLOPT_WRITEDATA, fo);
  if (getenv("VERBOSE")) curl_easy_setopt(c, CURLOPT_VERBOSE, 1L);
  CURLcode rc = curl_easy_perform(c);
  long code = 0; curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
  if (out) fclose(fo); else fflush(stdout);
  fprintf(stderr, "HTTP %ld (curl %d) %s %s\n", code, rc, method, url);
  return rc ? 3 : (code >= 200 && code < 300) ? 0 : 1;
}
