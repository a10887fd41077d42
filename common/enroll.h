/*
 * enroll: what the PAN defines for enrollment and every PSN's EST server
 * uses (docs/est.md): enrollment users (HTTP Basic) and certificate
 * templates (what an EST label selects).  The PAN checks and stores them
 * and publishes them as events (common/events.h); a PSN keeps the same
 * records in its store's config table and its EST server reads them.
 *
 * - A user record is "pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>":
 *   only a salted, slow hash of the password leaves the admin's command.
 * - A template record is "key = value" lines over the built-in default
 *   (the product's EAP authentication template), checked as a whole.
 */
#ifndef ISELAB_ENROLL_H
#define ISELAB_ENROLL_H

#include <stdbool.h>
#include <stddef.h>

#include "est.h"

struct error;

/* Store keys (STORE_TABLE_CONFIG) of users and templates. */
#define ENROLL_USER_PREFIX     "user/"
#define ENROLL_TEMPLATE_PREFIX "template/"

/* The built-in template: the product's EAP authentication template. */
#define ENROLL_TEMPLATE_DEFAULT      "EAP_Authentication_Certificate_Template"
#define ENROLL_TEMPLATE_DEFAULT_DAYS 730
/* Longest template record. */
#define ENROLL_TEMPLATE_MAX 4096
/* Longest user record: scheme, iterations, salt and hash in hex. */
#define ENROLL_RECORD_MAX 160
/* Shortest password we store. */
#define ENROLL_PASSWORD_MIN 8
/* The password of `pan user add`, when not on stdin. */
#define ENROLL_PASSWORD_ENV "ISELAB_USER_PASSWORD"

/* A user record for password; malloc'd, NULL with err set. */
char *enroll_user_hash(const char *password, struct error *err);
/* 1 when password matches record, 0 when not or the record is bad. */
int enroll_user_verify(const char *record, const char *password);
/* Burn the time of one verification (unknown users). */
void enroll_user_verify_dummy(const char *password);
/* 0 when record has the form enroll_user_hash() makes, else -1. */
int enroll_user_record_check(const char *record, struct error *err);
/* A user name HTTP Basic can carry (RFC 7617: no ':') and a log can show. */
int enroll_user_name_check(const char *name, struct error *err);
/*
 * The password for a new user: ENROLL_PASSWORD_ENV, else one line of
 * stdin; ENROLL_PASSWORD_MIN to EST_PASSWORD_MAX characters.  malloc'd.
 */
char *enroll_user_password(struct error *err);

/* An EST label (RFC 7030 3.2.2) as common/est.c accepts it. */
int enroll_label_check(const char *label, struct error *err);
/* The built-in template. */
void enroll_template_default(struct est_template *t);
/*
 * Parse a template record for label over the default; text is modified.
 * -1 with err naming the first bad line.
 */
int enroll_template_parse(const char *label, char *text, struct est_template *t,
                          struct error *err);
/* The record text of t (what enroll_template_parse() reads back). */
int enroll_template_format(const struct est_template *t, char *buf, size_t len,
                           struct error *err);

#endif
