/*
 * store_fill: put N synthetic issued-certificate records for one issuer
 * (a PSN's Endpoint Sub CA) into a node's store, for the OCSP benchmark
 * (docs/PERFORMANCE.md): a million certificates are not enrolled over EST
 * for a benchmark.
 *
 *	store_fill --store DIR --issuer SUBCA.pem --count N [--batch B]
 *	    [--serials-out F [--sample K]] [--index-out F] [--seed S]
 *
 * Run it on a copy of the store, with no service of the node running (it
 * writes).  Every record is a real X.509 certificate as store_put_x509()
 * takes it: one template (subject CN=ocsp-bench-<n>, issuer the Sub CA's
 * name, authority key identifier the Sub CA's key id, a throwaway EC P-256
 * key) given a fresh random 16-byte serial and subject per record and
 * signed by a throwaway key.  The OCSP responder reads only the record's
 * status for (issuer key id, serial) (common/ocsp.c), so what matters is
 * that the records are where, and as large as, real ones would be.
 *
 * Serials are generated first and sorted, so that every batch appends to
 * the LMDB B-tree in key order (store_batch_put_x509, B records per
 * transaction, default 10000 = STORE_BATCH_OPS_MAX).  --serials-out
 * writes K serials (default 1000) spread evenly over the sorted set, hex,
 * one a line: the load generator's request list.  --index-out writes an
 * `openssl ocsp -index` file (index.txt) of every serial, for the
 * `openssl ocsp` reference responder on the same data.
 *
 * Prints "store_fill: N records in S s (R records/s)".  Exit 0, or 1 with
 * the reason.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "benchutil.h"
#include "cert.h"
#include "store.h"
#include "util.h"

#define FILL_COUNT_MAX 10000000L
#define FILL_SERIAL_LEN 16

static int
cmp_serial(const void *a, const void *b)
{
	return memcmp(a, b, FILL_SERIAL_LEN);
}

/* xorshift64*: reproducible serials for a given --seed, fast. */
static uint64_t
rng_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ull;
}

/* The template: issuer, AKI, validity and key fixed; serial per record. */
static X509 *
template_new(X509 *issuer, EVP_PKEY *key, const uint8_t kid[STORE_KEY_ID_LEN])
{
	X509 *x = X509_new();
	AUTHORITY_KEYID *akid = AUTHORITY_KEYID_new();
	time_t now = time(NULL);

	if (x == NULL || akid == NULL ||
	    (akid->keyid = ASN1_OCTET_STRING_new()) == NULL ||
	    ASN1_OCTET_STRING_set(akid->keyid, kid, STORE_KEY_ID_LEN) != 1 ||
	    X509_set_version(x, X509_VERSION_3) != 1 ||
	    X509_set_issuer_name(x, X509_get_subject_name(issuer)) != 1 ||
	    X509_time_adj_ex(X509_getm_notBefore(x), 0, -3600, &now) == NULL ||
	    X509_time_adj_ex(X509_getm_notAfter(x), 365, 0, &now) == NULL ||
	    X509_set_pubkey(x, key) != 1 ||
	    X509_add1_ext_i2d(x, NID_authority_key_identifier, akid, 0, 0) !=
	        1)
		bench_die("cannot make the template certificate");
	AUTHORITY_KEYID_free(akid);
	return x;
}

/* One record's certificate: the template with its serial and subject. */
static void
template_set(X509 *x, EVP_PKEY *key, const uint8_t *sn, size_t n)
{
	ASN1_INTEGER *ai;
	BIGNUM *bn;
	X509_NAME *name;
	char cn[64];

	snprintf(cn, sizeof(cn), "ocsp-bench-%zu", n);
	if ((bn = BN_bin2bn(sn, FILL_SERIAL_LEN, NULL)) == NULL ||
	    (ai = BN_to_ASN1_INTEGER(bn, NULL)) == NULL ||
	    X509_set_serialNumber(x, ai) != 1 || (name = X509_NAME_new()) == NULL ||
	    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
	                               (const unsigned char *)cn, -1, -1,
	                               0) != 1 ||
	    X509_set_subject_name(x, name) != 1 ||
	    X509_sign(x, key, EVP_sha256()) <= 0)
		bench_die("cannot make certificate %zu", n);
	X509_NAME_free(name);
	ASN1_INTEGER_free(ai);
	BN_free(bn);
}

static void
write_index(const char *path, const uint8_t *serials, size_t count, X509 *tmpl)
{
	const ASN1_TIME *na = X509_get0_notAfter(tmpl);
	char exp[32], hex[2 * FILL_SERIAL_LEN + 1];
	struct tm tm;
	FILE *f;
	size_t i;

	if (ASN1_TIME_to_tm(na, &tm) != 1)
		bench_die("notAfter");
	/* index.txt wants UTCTime: YYMMDDHHMMSSZ. */
	snprintf(exp, sizeof(exp), "%02d%02d%02d%02d%02d%02dZ",
	         tm.tm_year % 100, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	         tm.tm_min, tm.tm_sec);
	if ((f = fopen(path, "w")) == NULL)
		bench_die("%s: %s", path, strerror(errno));
	for (i = 0; i < count; i++) {
		hex_encode(serials + i * FILL_SERIAL_LEN, FILL_SERIAL_LEN, hex);
		/* openssl looks serials up as BN_bn2hex prints them. */
		for (char *p = hex; *p; p++)
			if (*p >= 'a' && *p <= 'f')
				*p = (char)(*p - 'a' + 'A');
		fprintf(f, "V\t%s\t\t%s\tunknown\t/CN=ocsp-bench-%zu\n", exp,
		        hex, i);
	}
	if (fclose(f) != 0)
		bench_die("%s: %s", path, strerror(errno));
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"store", required_argument, NULL, 's'},
	    {"issuer", required_argument, NULL, 'i'},
	    {"count", required_argument, NULL, 'n'},
	    {"batch", required_argument, NULL, 'b'},
	    {"serials-out", required_argument, NULL, 'o'},
	    {"sample", required_argument, NULL, 'k'},
	    {"index-out", required_argument, NULL, 'x'},
	    {"seed", required_argument, NULL, 'r'},
	    {NULL, 0, NULL, 0},
	};
	const char *dir = NULL, *issuer_path = NULL, *serials_out = NULL;
	const char *index_out = NULL;
	long count = 0, batch = STORE_BATCH_OPS_MAX, sample = 1000;
	uint64_t seed = 0x5eed0c5bu;
	struct store *st = NULL;
	struct store_batch *b;
	struct error e = {{0}};
	uint8_t kid[STORE_KEY_ID_LEN], *serials;
	EVP_PKEY *key;
	X509 *issuer, *x;
	double t0, t;
	size_t i, j;
	int c, rc;

	bench_prog = "store_fill";
	bench_die_status = 1;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			dir = optarg;
			break;
		case 'i':
			issuer_path = optarg;
			break;
		case 'n':
			count = bench_parse_long(optarg, "--count", 1, FILL_COUNT_MAX);
			break;
		case 'b':
			batch = bench_parse_long(optarg, "--batch", 1,
			                   STORE_BATCH_OPS_MAX);
			break;
		case 'o':
			serials_out = optarg;
			break;
		case 'k':
			sample = bench_parse_long(optarg, "--sample", 1, 1000000);
			break;
		case 'x':
			index_out = optarg;
			break;
		case 'r':
			seed = (uint64_t)bench_parse_long(optarg, "--seed", 1,
			                            0x7fffffffL);
			break;
		default:
			goto usage;
		}
	}
	if (optind != argc || dir == NULL || issuer_path == NULL || count == 0)
		goto usage;
	if ((issuer = cert_load_pem(issuer_path, &e)) == NULL)
		bench_die("%s", e.msg);
	if (store_issuer_key_id(issuer, kid, &e) == -1)
		bench_die("%s", e.msg);
	/* Random 16-byte serials as the CA makes them: positive, no 00 lead. */
	if ((serials = malloc((size_t)count * FILL_SERIAL_LEN)) == NULL)
		bench_die("out of memory");
	for (i = 0; i < (size_t)count; i++) {
		uint64_t a = rng_next(&seed), z = rng_next(&seed);
		uint8_t *sn = serials + i * FILL_SERIAL_LEN;

		memcpy(sn, &a, 8);
		memcpy(sn + 8, &z, 8);
		sn[0] = (uint8_t)(0x10 | (sn[0] & 0x6f)); /* 0x10..0x7f */
	}
	qsort(serials, (size_t)count, FILL_SERIAL_LEN, cmp_serial);
	for (i = 1; i < (size_t)count; i++)
		if (memcmp(serials + (i - 1) * FILL_SERIAL_LEN,
		           serials + i * FILL_SERIAL_LEN, FILL_SERIAL_LEN) == 0)
			bench_die("duplicate serial: try another --seed");
	if ((key = EVP_EC_gen("P-256")) == NULL)
		bench_die("cannot make a throwaway key");
	x = template_new(issuer, key, kid);
	if (store_open(dir, NULL, &st, &e) == -1)
		bench_die("%s", e.msg);
	t0 = bench_now_s();
	for (i = 0; i < (size_t)count; i += (size_t)batch) {
		if ((b = store_batch_new()) == NULL)
			bench_die("out of memory");
		for (j = i; j < (size_t)count && j < i + (size_t)batch; j++) {
			template_set(x, key, serials + j * FILL_SERIAL_LEN, j);
			if (store_batch_put_x509(b, x, kid, "store-fill",
			                         "ocsp-bench",
			                         (int64_t)time(NULL)) == -1)
				break;
		}
		if ((rc = store_apply(st, b, &e)) != STORE_OK)
			bench_die("batch at record %zu: %s", i,
			    rc == STORE_EXISTS ? "a serial is already stored"
			                       : e.msg);
		store_batch_free(b);
	}
	t = bench_now_s() - t0;
	printf("store_fill: %ld records in %.1f s (%.0f records/s)\n", count,
	       t, (double)count / (t > 0 ? t : 1e-9));
	store_close(st);
	if (serials_out != NULL) {
		FILE *f = fopen(serials_out, "w");
		char hex[2 * FILL_SERIAL_LEN + 1];
		size_t k = (size_t)sample < (size_t)count ? (size_t)sample
		                                          : (size_t)count;

		if (f == NULL)
			bench_die("%s: %s", serials_out, strerror(errno));
		for (i = 0; i < k; i++) {
			/* Evenly over the key order: every part of the tree. */
			hex_encode(serials + (i * (size_t)count / k) *
			                         FILL_SERIAL_LEN,
			           FILL_SERIAL_LEN, hex);
			fprintf(f, "%s\n", hex);
		}
		if (fclose(f) != 0)
			bench_die("%s: %s", serials_out, strerror(errno));
	}
	if (index_out != NULL)
		write_index(index_out, serials, (size_t)count, x);
	X509_free(x);
	X509_free(issuer);
	EVP_PKEY_free(key);
	free(serials);
	return 0;
usage:
	fprintf(stderr, "usage: store_fill --store DIR --issuer SUBCA.pem "
	                "--count N [--batch B] [--serials-out F [--sample K]] "
	                "[--index-out F] [--seed S]\n");
	return 2;
}
