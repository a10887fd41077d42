/*
 * admin: the client side of `pan node ...`, `pan ca certs`, `pan cert ...`
 * and `pan alarms`.
 *
 * The admin commands never open the store: the running daemon owns it
 * (DESIGN.md section 1).  The client finds the data directory, sends its
 * argv over the control socket (ipc://D/control.sock, 0600, so only the
 * daemon's user gets in) and prints what the daemon formatted, exiting with
 * the status the daemon chose.  The daemon parses the options, so a usage
 * error reads the same whoever typed it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "enroll.h"
#include "node.h"
#include "pan.h"
#include "proc.h"
#include "util.h"

/* Most arguments an admin command forwards. */
#define ADMIN_ARGS_MAX 64

static const char *const node_usage =
    "usage: pan node add HOST --role psn|san [--session-services on|off] "
    "[--ttl 1h] --data-dir DIR\n"
    "       pan node list [--services] --data-dir DIR\n"
    "       pan node remove HOST --data-dir DIR\n"
    "       pan node edit HOST --session-services on|off --data-dir DIR\n";
static const char *const ca_usage =
    "usage: pan ca certs [--pem | --verify] --data-dir DIR\n"
    "       pan ca disable|enable [--node HOST] --data-dir DIR\n"
    "       pan ca export --out FILE [--key-file F] [--passphrase-file P] "
    "--data-dir DIR\n"
    "       pan ca replace-root-chain --data-dir DIR\n";
static const char *const cert_usage =
    "usage: pan cert list [--node HOST] [--status good|revoked|hold] "
    "[--limit N] [--after CURSOR] --data-dir DIR\n"
    "       pan cert show SERIAL --data-dir DIR\n"
    "       pan cert revoke SERIAL|--subject DN [--node HOST] "
    "[--reason REASON] --data-dir DIR\n"
    "       pan cert hold|release SERIAL|--subject DN [--node HOST] "
    "--data-dir DIR\n";
static const char *const user_usage =
    "usage: pan user add NAME --data-dir DIR   (password: one line on "
    "stdin, or " ENROLL_PASSWORD_ENV ")\n"
    "       pan user remove NAME --data-dir DIR\n"
    "       pan user list --data-dir DIR\n";
static const char *const template_usage =
    "usage: pan template add LABEL [--profile tls-client|tls-server] "
    "[--validity 730d]\n"
    "                 [--key-types ec:p256,ec:p384,rsa:2048,...] "
    "[--keygen TYPE]\n"
    "                 [--pop off|optional|required] [--require-cn "
    "yes|no] --data-dir DIR\n"
    "       pan template list --data-dir DIR\n"
    "       pan template remove LABEL --data-dir DIR\n";
static const char *const loglevel_usage =
    "usage: pan log-level set CATEGORY LEVEL [--node HOST] --data-dir DIR\n"
    "       pan log-level list [--node HOST] --data-dir DIR\n"
    "categories: est provisioning ca-service ca-service-cert messaging "
    "ocsp main all\n"
    "levels: error warn info debug\n";
static const char *const alarms_usage =
    "usage: pan alarms [--all] --data-dir DIR\n";

/*
 * Take --data-dir (or --data-dir=DIR) out of argv, keeping the rest in
 * order in fwd.  ISELAB_DATA_DIR stands in when the flag is absent.
 * Returns the number of forwarded arguments, -1 on a usage error, or -2
 * when --help was asked for.
 */
static int
admin_args(const char *cmd, int argc, char **argv, const char **datadir,
           char **fwd)
{
	int i, n = 0;

	*datadir = NULL;
	for (i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 ||
		    strcmp(argv[i], "-h") == 0)
			return -2;
		if (strcmp(argv[i], "--data-dir") == 0) {
			if (i + 1 >= argc) {
				fprintf(stderr,
				        "pan %s: --data-dir needs a "
				        "directory\n",
				        cmd);
				return -1;
			}
			*datadir = argv[++i];
			continue;
		}
		if (strncmp(argv[i], "--data-dir=", 11) == 0) {
			*datadir = argv[i] + 11;
			continue;
		}
		if (n >= ADMIN_ARGS_MAX) {
			fprintf(stderr, "pan %s: too many arguments\n", cmd);
			return -1;
		}
		fwd[n++] = argv[i];
	}
	if (*datadir == NULL)
		*datadir = getenv(PAN_DATA_DIR_ENV);
	if (*datadir == NULL || **datadir == '\0') {
		fprintf(stderr, "pan %s: --data-dir is required (or %s)\n", cmd,
		        PAN_DATA_DIR_ENV);
		return -1;
	}
	return n;
}

int
admin_call(const char *cmd, const char *datadir, char **argv, int argc,
           int timeout_ms, bool quiet, bool *answered)
{
	struct node_identity id;
	struct error err = {{0}};
	char *out = NULL, *errtext = NULL;
	int status = PAN_EXIT_FAIL;

	*answered = false;
	/* Say "no deployment here" rather than "not running" when it fits. */
	if (node_identity_read(datadir, &id, &err) == -1) {
		fprintf(stderr, "pan %s: %s\n", cmd, err.msg);
		return PAN_EXIT_FAIL;
	}
	/* A SAN answers too: the primary's commands once promoted. */
	if (id.role == NODE_ROLE_PSN) {
		fprintf(stderr, "pan %s: %s holds a %s node, not a pan\n", cmd,
		        datadir, node_role_name(id.role));
		return PAN_EXIT_FAIL;
	}
	if (control_call(datadir, (const char *const *)argv, argc, timeout_ms,
	                 &out, &errtext, &status, &err) == -1) {
		if (!quiet)
			fprintf(stderr,
			        "pan is not running on %s (start it "
			        "with: pan run --data-dir %s)\n",
			        datadir, datadir);
		return PAN_EXIT_FAIL;
	}
	*answered = true;
	if (out != NULL)
		fputs(out, stdout);
	if (errtext != NULL)
		fputs(errtext, stderr);
	fflush(stdout);
	free(out);
	free(errtext);
	return status;
}

/* Forward argv[0..argc) (argv[0] the command word) to the daemon. */
static int
admin_forward(const char *cmd, const char *usage, int argc, char **argv,
              int timeout_ms)
{
	char *fwd[ADMIN_ARGS_MAX];
	const char *datadir;
	bool answered;
	int n;

	n = admin_args(cmd, argc, argv, &datadir, fwd);
	if (n == -2) {
		fputs(usage, stdout);
		return PAN_EXIT_OK;
	}
	if (n < 0) {
		fputs(usage, stderr);
		return PAN_EXIT_USAGE;
	}
	return admin_call(cmd, datadir, fwd, n, timeout_ms, false,
	                  &answered);
}

int
pan_node_main(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "--help") == 0) {
		fputs(node_usage, argc < 2 ? stderr : stdout);
		return argc < 2 ? PAN_EXIT_USAGE : PAN_EXIT_OK;
	}
	if (strcmp(argv[1], "add") != 0 && strcmp(argv[1], "list") != 0 &&
	    strcmp(argv[1], "remove") != 0 && strcmp(argv[1], "edit") != 0) {
		fprintf(stderr, "pan node: unknown command '%s'\n", argv[1]);
		fputs(node_usage, stderr);
		return PAN_EXIT_USAGE;
	}
	return admin_forward("node", node_usage, argc, argv, PAN_CONTROL_TIMEOUT_MS);
}

int
pan_ca_main(int argc, char **argv)
{
	/* Local, like pan init: the daemon never hands out the keys. */
	if (argc >= 2 && strcmp(argv[1], "export") == 0)
		return pan_ca_export(argc - 1, argv + 1);
	if (argc < 2 || (strcmp(argv[1], "certs") != 0 &&
	                 strcmp(argv[1], "replace-root-chain") != 0 &&
	                 strcmp(argv[1], "disable") != 0 &&
	                 strcmp(argv[1], "enable") != 0)) {
		if (argc >= 2 && strcmp(argv[1], "--help") == 0) {
			fputs(ca_usage, stdout);
			return PAN_EXIT_OK;
		}
		fputs(ca_usage, stderr);
		return PAN_EXIT_USAGE;
	}
	return admin_forward("ca", ca_usage, argc, argv,
	                     strcmp(argv[1], "replace-root-chain") == 0
	                         ? PAN_ROOTCHAIN_TIMEOUT_MS
	                         : PAN_CONTROL_TIMEOUT_MS);
}

int
pan_loglevel_main(int argc, char **argv)
{
	if (argc < 2 ||
	    (strcmp(argv[1], "set") != 0 && strcmp(argv[1], "list") != 0)) {
		if (argc >= 2 && strcmp(argv[1], "--help") == 0) {
			fputs(loglevel_usage, stdout);
			return PAN_EXIT_OK;
		}
		if (argc >= 2)
			fprintf(stderr, "pan log-level: unknown command '%s'\n",
			        argv[1]);
		fputs(loglevel_usage, stderr);
		return PAN_EXIT_USAGE;
	}
	return admin_forward("log-level", loglevel_usage, argc, argv,
	                     PAN_CONTROL_TIMEOUT_MS);
}

int
pan_alarms_main(int argc, char **argv)
{
	return admin_forward("alarms", alarms_usage, argc, argv, PAN_CONTROL_TIMEOUT_MS);
}

int
pan_cert_main(int argc, char **argv)
{
	if (argc < 2 ||
	    (strcmp(argv[1], "list") != 0 && strcmp(argv[1], "show") != 0 &&
	     strcmp(argv[1], "revoke") != 0 && strcmp(argv[1], "hold") != 0 &&
	     strcmp(argv[1], "release") != 0)) {
		if (argc >= 2 && strcmp(argv[1], "--help") == 0) {
			fputs(cert_usage, stdout);
			return PAN_EXIT_OK;
		}
		if (argc >= 2 && argv[1][0] != '-')
			fprintf(stderr, "pan cert: unknown command '%s'\n",
			        argv[1]);
		fputs(cert_usage, stderr);
		return PAN_EXIT_USAGE;
	}
	return admin_forward("cert", cert_usage, argc, argv, PAN_CONTROL_TIMEOUT_MS);
}

/*
 * `pan user add` reads the password here and sends only its salted hash
 * (common/enroll.h): the password never reaches the daemon, the store or
 * any other node.
 */
int
pan_user_main(int argc, char **argv)
{
	char *fwd[ADMIN_ARGS_MAX + 2], *pw = NULL, *rec = NULL;
	const char *datadir;
	struct error err = {{0}};
	bool answered;
	int n, i, rc;

	n = admin_args("user", argc, argv, &datadir, fwd);
	if (n == -2) {
		fputs(user_usage, stdout);
		return PAN_EXIT_OK;
	}
	if (n < 2 || (strcmp(fwd[1], "add") != 0 &&
	              strcmp(fwd[1], "remove") != 0 &&
	              strcmp(fwd[1], "list") != 0)) {
		if (n >= 2)
			fprintf(stderr, "pan user: unknown command '%s'\n",
			        fwd[1]);
		fputs(user_usage, stderr);
		return PAN_EXIT_USAGE;
	}
	for (i = 2; i < n; i++)
		if (fwd[i][0] == '-') {
			fprintf(stderr, "pan user: unknown option '%s'\n%s",
			        fwd[i], user_usage);
			return PAN_EXIT_USAGE;
		}
	if (strcmp(fwd[1], "add") == 0) {
		if (n != 3) {
			fprintf(stderr, "pan user add: one user name\n%s",
			        user_usage);
			return PAN_EXIT_USAGE;
		}
		if (enroll_user_name_check(fwd[2], &err) == -1) {
			fprintf(stderr, "pan user add: %s\n", err.msg);
			return PAN_EXIT_USAGE;
		}
		if ((pw = enroll_user_password(&err)) == NULL ||
		    (rec = enroll_user_hash(pw, &err)) == NULL) {
			fprintf(stderr, "pan user add: %s\n", err.msg);
			if (pw != NULL)
				secure_zero(pw, strlen(pw));
			free(pw);
			return PAN_EXIT_FAIL;
		}
		secure_zero(pw, strlen(pw));
		free(pw);
		fwd[n++] = "--record";
		fwd[n++] = rec;
	}
	rc = admin_call("user", datadir, fwd, n, PAN_CONTROL_TIMEOUT_MS, false,
	                &answered);
	free(rec);
	return rc;
}

int
pan_template_main(int argc, char **argv)
{
	if (argc < 2 || (strcmp(argv[1], "add") != 0 &&
	                 strcmp(argv[1], "list") != 0 &&
	                 strcmp(argv[1], "remove") != 0)) {
		if (argc >= 2 && strcmp(argv[1], "--help") == 0) {
			fputs(template_usage, stdout);
			return PAN_EXIT_OK;
		}
		if (argc >= 2)
			fprintf(stderr, "pan template: unknown command '%s'\n",
			        argv[1]);
		fputs(template_usage, stderr);
		return PAN_EXIT_USAGE;
	}
	return admin_forward("template", template_usage, argc, argv, PAN_CONTROL_TIMEOUT_MS);
}
