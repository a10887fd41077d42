/*
 * certwatch: expiry alarms of a node's own CA and OCSP responder
 * certificates; see certwatch.h.
 *
 * A watched file is read again only when the stat() of it changed (inode,
 * size, mtime) or the hourly recheck is due, so the cost between checks
 * is a few stat() calls every CERTWATCH_STAT_MS.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/x509.h>

#include "cert.h"
#include "certwatch.h"
#include "log.h"
#include "node.h"
#include "registry.pb-c.h"
#include "util.h"

/* Longest path of a watched file. */
#define CERTWATCH_PATH_MAX 4096
/* Room for "<alarm name>: <label>". */
#define CERTWATCH_NAME_MAX 64
/* Seconds in a day. */
#define CERTWATCH_DAY_SECS (24 * 3600)

/* What a check found. */
enum certwatch_state {
	CW_UNKNOWN, /* not checked yet */
	CW_ABSENT,  /* no such file: not held */
	CW_BAD,     /* there, but it does not parse */
	CW_OK,      /* more than CERTWATCH_WARN_DAYS left */
	CW_SOON,    /* within CERTWATCH_WARN_DAYS */
	CW_EXPIRED, /* past notAfter */
};

struct certwatch_item {
	char label[CERTWATCH_NAME_MAX];
	char path[CERTWATCH_PATH_MAX];
	bool seen;   /* st below is from a stat() that succeeded */
	struct stat st;
	enum certwatch_state state;
	time_t not_after; /* for SOON and EXPIRED */
};

struct certwatch {
	char node[NODE_HOSTNAME_MAX + 1];
	struct certwatch_item items[CERTWATCH_MAX];
	size_t n;
	int64_t next_stat; /* mono ms; 0: now */
	int64_t next_full; /* mono ms; 0: now */
};

struct certwatch *
certwatch_new(const char *datadir, const char *node,
              const struct certwatch_cert *certs, struct error *err)
{
	struct certwatch *w;
	size_t i;
	int n;

	if ((w = calloc(1, sizeof(*w))) == NULL) {
		error_set(err, "out of memory");
		return NULL;
	}
	snprintf(w->node, sizeof(w->node), "%s", node);
	for (i = 0; certs[i].label != NULL; i++) {
		struct certwatch_item *it = &w->items[i];

		if (i == CERTWATCH_MAX) {
			error_set(err, "more than %d certificates to watch",
			          CERTWATCH_MAX);
			goto fail;
		}
		n = snprintf(it->path, sizeof(it->path), "%s/%s", datadir,
		             certs[i].file);
		if (n < 0 || (size_t)n >= sizeof(it->path)) {
			error_set(err, "path of %s too long", certs[i].file);
			goto fail;
		}
		snprintf(it->label, sizeof(it->label), "%s", certs[i].label);
		w->n++;
	}
	return w;
fail:
	free(w);
	return NULL;
}

void
certwatch_free(struct certwatch *w)
{
	free(w);
}

/* Whether the file differs from what the last stat() saw. */
static bool
certwatch_changed(struct certwatch_item *it)
{
	struct stat st;
	bool now, changed;

	now = stat(it->path, &st) == 0;
	if (!now && !it->seen)
		return false;
	changed = now != it->seen || st.st_ino != it->st.st_ino ||
	          st.st_size != it->st.st_size ||
	          st.st_mtim.tv_sec != it->st.st_mtim.tv_sec ||
	          st.st_mtim.tv_nsec != it->st.st_mtim.tv_nsec;
	it->seen = now;
	if (now)
		it->st = st;
	return changed;
}

/* Read the certificate again and say what it is now. */
static enum certwatch_state
certwatch_read(struct certwatch_item *it, time_t now, char *cn, size_t cnlen)
{
	struct error e = {{0}};
	X509 *x;
	enum certwatch_state s;

	if (access(it->path, F_OK) == -1 && errno == ENOENT)
		return CW_ABSENT;
	if ((x = cert_load_pem(it->path, &e)) == NULL ||
	    cert_not_after(x, &it->not_after, &e) == -1) {
		if (it->state != CW_BAD)
			log_warn(LOG_MAIN, "certificate expiry: %s (%s): %s",
			         it->label, it->path, e.msg);
		X509_free(x);
		return CW_BAD;
	}
	if (cert_subject_cn(x, cn, cnlen, NULL) == -1)
		snprintf(cn, cnlen, "?");
	X509_free(x);
	if (it->not_after <= now)
		s = CW_EXPIRED;
	else if (it->not_after - now <=
	         (time_t)CERTWATCH_WARN_DAYS * CERTWATCH_DAY_SECS)
		s = CW_SOON;
	else
		s = CW_OK;
	return s;
}

/* Check one certificate and raise or clear its two alarms. */
static void
certwatch_check(struct certwatch *w, struct certwatch_item *it, time_t now,
                int64_t now_mono, certwatch_alarm_fn fn, void *arg)
{
	char soon[CERTWATCH_NAME_MAX * 2], expired[CERTWATCH_NAME_MAX * 2];
	char cn[CERT_CN_BUF] = "", when[32], text[512];
	enum certwatch_state s;
	struct tm tm;
	long days;

	s = certwatch_read(it, now, cn, sizeof(cn));
	snprintf(soon, sizeof(soon), "%s: %s", CERTWATCH_ALARM_SOON,
	         it->label);
	snprintf(expired, sizeof(expired), "%s: %s", CERTWATCH_ALARM_EXPIRED,
	         it->label);
	if (s != CW_SOON && s != CW_EXPIRED) {
		if (it->state == CW_SOON || it->state == CW_EXPIRED)
			log_info(LOG_MAIN,
			         "certificate expiry: %s of %s %s: alarm "
			         "cleared",
			         it->label, w->node,
			         s == CW_ABSENT ? "no longer held"
			                        : "no longer near its end");
		fn(arg, soon, 0, NULL);
		fn(arg, expired, 0, NULL);
		it->state = s;
		return;
	}
	if (gmtime_r(&it->not_after, &tm) == NULL ||
	    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(when, sizeof(when), "?");
	if (s == CW_EXPIRED) {
		snprintf(text, sizeof(text), "%s of %s (CN=%s) expired on %s",
		         it->label, w->node, cn, when);
		fn(arg, soon, 0, NULL);
		fn(arg, expired, ISELAB__ALARM_SEVERITY__ALARM_SEVERITY_CRITICAL,
		   text);
	} else {
		/* Check again the second it ends, not up to an hour later. */
		if (now_mono + (int64_t)(it->not_after - now + 1) * 1000 <
		    w->next_full)
			w->next_full =
			    now_mono + (int64_t)(it->not_after - now + 1) * 1000;
		days = (long)((it->not_after - now) / CERTWATCH_DAY_SECS);
		snprintf(text, sizeof(text),
		         "%s of %s (CN=%s) expires on %s, in %ld day%s", it->label,
		         w->node, cn, when, days, days == 1 ? "" : "s");
		fn(arg, expired, 0, NULL);
		fn(arg, soon, ISELAB__ALARM_SEVERITY__ALARM_SEVERITY_WARNING,
		   text);
	}
	if (it->state != s)
		log_warn(LOG_MAIN, "certificate expiry: %s", text);
	it->state = s;
}

int64_t
certwatch_tick(struct certwatch *w, int64_t now_mono, certwatch_alarm_fn fn,
               void *arg)
{
	bool full;
	time_t now;
	size_t i;

	if (w == NULL)
		return -1;
	if (now_mono < w->next_stat)
		return w->next_stat - now_mono;
	w->next_stat = now_mono + CERTWATCH_STAT_MS;
	full = now_mono >= w->next_full;
	if (full)
		w->next_full = now_mono + CERTWATCH_RECHECK_MS;
	now = time(NULL);
	for (i = 0; i < w->n; i++)
		/* Always stat, so a full check leaves no change pending. */
		if (certwatch_changed(&w->items[i]) || full ||
		    w->items[i].state == CW_UNKNOWN)
			certwatch_check(w, &w->items[i], now, now_mono, fn,
			                arg);
	return CERTWATCH_STAT_MS;
}
