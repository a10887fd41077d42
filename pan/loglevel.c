/*
 * loglevel: `pan log-level set CATEGORY LEVEL [--node HOST]` and `pan
 * log-level list [--node HOST]`, the product's debug log configuration
 * (ISE-CA-EST.md, troubleshooting step 4: categories est, provisioning,
 * ca-service, ca-service-cert) changed at run time, per node.
 *
 * A node's levels are one LogLevels event (the whole set each time) in
 * the event log (docs/events.md): every member applies it to its store,
 * the node it names writes its log directory's levels file, and every
 * process of that node reads the file within a second (common/log.h).
 * The store keeps the set, so it holds after a restart, and a node that
 * was down gets it when it catches up.  The PAN's own levels go the same
 * way; it writes its file when it commits the event.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "events.h"
#include "log.h"
#include "pan.h"
#include "util.h"

#define LOGLEVEL_USAGE                                                         \
	"usage: pan log-level set CATEGORY LEVEL [--node HOST] --data-dir "   \
	"DIR\n"                                                                \
	"       pan log-level list [--node HOST] --data-dir DIR\n"              \
	"categories: est provisioning ca-service ca-service-cert messaging "   \
	"ocsp main all\n"                                                      \
	"levels: error warn info debug\n"

void
loglevel_sync(struct pan *p)
{
	char logdir[PAN_PATH_MAX];
	struct error e = {{0}};

	if (node_path(logdir, sizeof(logdir), p->datadir, NODE_LOG_DIR, &e) ==
	        -1 ||
	    events_log_levels_sync(p->st, p->id.hostname, logdir, &e) == -1)
		log_error(LOG_MAIN, "runtime log levels: %s", e.msg);
}

/* The hosts a command is for: HOST, or the PAN and every live node. */
static int
loglevel_hosts(struct pan *p, const char *node, const char **hosts,
               size_t *n, FILE *errf, const char *cmd)
{
	struct pan_node *pn;
	size_t i;

	*n = 0;
	if (node != NULL) {
		if (strcmp(node, p->id.hostname) != 0 &&
		    ((pn = registry_find(p, node)) == NULL ||
		     pn->link == PAN_LINK_REMOVED)) {
			fprintf(errf, "pan log-level %s: no node %s in this "
			              "deployment\n",
			        cmd, node);
			return -1;
		}
		hosts[(*n)++] = node;
		return 0;
	}
	hosts[(*n)++] = p->id.hostname;
	for (i = 0; i < p->nnodes; i++)
		if (p->nodes[i].link != PAN_LINK_REMOVED)
			hosts[(*n)++] = p->nodes[i].hostname;
	return 0;
}

/* One node's new set, as an event; 1 changed, 0 already so, -1. */
static int
loglevel_commit(struct pan *p, const char *host, int cat, int level,
                struct error *err)
{
	Iselab__Event ev = ISELAB__EVENT__INIT;
	Iselab__LogLevels ll = ISELAB__LOG_LEVELS__INIT;
	Iselab__CategoryLevel cl[LOG_CATEGORY_COUNT], *clp[LOG_CATEGORY_COUNT];
	int levels[LOG_CATEGORY_COUNT], c;
	bool changed = false;

	if (events_log_levels(p->st, host, levels, err) == -1)
		return -1;
	for (c = 0; c < LOG_CATEGORY_COUNT; c++)
		if (cat < 0 || c == cat) {
			changed = changed || levels[c] != level;
			levels[c] = level;
		}
	if (!changed)
		return 0;
	ll.hostname = (char *)host;
	for (c = 0; c < LOG_CATEGORY_COUNT; c++) {
		if (levels[c] < 0)
			continue;
		iselab__category_level__init(&cl[ll.n_levels]);
		cl[ll.n_levels].category =
		    (char *)log_category_name((enum log_category)c);
		cl[ll.n_levels].level =
		    (char *)log_level_name((enum log_level)levels[c]);
		clp[ll.n_levels] = &cl[ll.n_levels];
		ll.n_levels++;
	}
	ll.levels = clp;
	ev.change_case = ISELAB__EVENT__CHANGE_LOG_LEVELS;
	ev.log_levels = &ll;
	if (eventlog_commit(p, &ev, NULL, err) == -1)
		return -1;
	if (strcmp(host, p->id.hostname) == 0)
		loglevel_sync(p);
	return 1;
}

static int
loglevel_set(struct pan *p, const char *cat_s, const char *level_s,
             const char *node, FILE *out, FILE *errf)
{
	const char **hosts = NULL;
	struct error err = {{0}};
	size_t i, n = 0;
	int cat = -1, level, rc = PAN_EXIT_OK, r;

	if (strcasecmp(cat_s, "all") != 0 &&
	    (cat = log_category_from_name(cat_s)) < 0) {
		fprintf(errf, "pan log-level set: unknown category '%s'\n%s",
		        cat_s, LOGLEVEL_USAGE);
		return PAN_EXIT_USAGE;
	}
	if ((level = log_level_from_name(level_s)) < 0) {
		fprintf(errf, "pan log-level set: unknown level '%s'\n%s",
		        level_s, LOGLEVEL_USAGE);
		return PAN_EXIT_USAGE;
	}
	if ((hosts = calloc(p->nnodes + 1, sizeof(*hosts))) == NULL) {
		fprintf(errf, "pan log-level set: out of memory\n");
		return PAN_EXIT_FAIL;
	}
	if (loglevel_hosts(p, node, hosts, &n, errf, "set") == -1) {
		rc = PAN_EXIT_FAIL;
		goto out;
	}
	for (i = 0; i < n; i++) {
		r = loglevel_commit(p, hosts[i], cat, level, &err);
		if (r == -1) {
			fprintf(errf, "pan log-level set: %s: %s\n", hosts[i],
			        err.msg);
			rc = PAN_EXIT_FAIL;
		} else if (r == 0)
			fprintf(out, "%s: %s is already %s\n", hosts[i],
			        cat < 0 ? "every category" : cat_s,
			        log_level_name((enum log_level)level));
		else {
			fprintf(out, "%s: %s %s (event %" PRIu64 ")\n",
			        hosts[i], cat < 0 ? "every category" : cat_s,
			        log_level_name((enum log_level)level),
			        p->event_seq);
			log_info(LOG_MAIN, "log level of %s on %s set to %s",
			         cat < 0 ? "every category" : cat_s, hosts[i],
			         log_level_name((enum log_level)level));
		}
	}
out:
	free(hosts);
	return rc;
}

static int
loglevel_list(struct pan *p, const char *node, FILE *out, FILE *errf)
{
	const char **hosts = NULL;
	struct error err = {{0}};
	int levels[LOG_CATEGORY_COUNT], c, rc = PAN_EXIT_FAIL;
	size_t i, n = 0;

	if ((hosts = calloc(p->nnodes + 1, sizeof(*hosts))) == NULL) {
		fprintf(errf, "pan log-level list: out of memory\n");
		return PAN_EXIT_FAIL;
	}
	if (loglevel_hosts(p, node, hosts, &n, errf, "list") == -1)
		goto out;
	fprintf(out, "%-16s %-16s %s\n", "NODE", "CATEGORY", "LEVEL");
	for (i = 0; i < n; i++) {
		if (events_log_levels(p->st, hosts[i], levels, &err) == -1) {
			fprintf(errf, "pan log-level list: %s: %s\n", hosts[i],
			        err.msg);
			goto out;
		}
		for (c = 0; c < LOG_CATEGORY_COUNT; c++)
			if (levels[c] >= 0)
				fprintf(out, "%-16s %-16s %s\n", hosts[i],
				        log_category_name((enum log_category)c),
				        log_level_name((enum log_level)levels[c]));
			else
				fprintf(out, "%-16s %-16s %s\n", hosts[i],
				        log_category_name((enum log_category)c),
				        "(log.level of the node)");
	}
	rc = PAN_EXIT_OK;
out:
	free(hosts);
	return rc;
}

int
loglevel_cmd(struct pan *p, int argc, char **argv, FILE *out, FILE *errf)
{
	const char *node = NULL, *pos[2] = {NULL, NULL};
	size_t npos = 0;
	int i, m;

	/* argv: log-level set|list ... */
	if (argc < 2 ||
	    (strcmp(argv[1], "set") != 0 && strcmp(argv[1], "list") != 0)) {
		fputs(LOGLEVEL_USAGE, errf);
		return PAN_EXIT_USAGE;
	}
	for (i = 2; i < argc; i++) {
		if ((m = opt_match(argc, argv, &i, "--node", &node)) == -1) {
			fprintf(errf, "pan log-level: --node needs a host "
			              "name\n" LOGLEVEL_USAGE);
			return PAN_EXIT_USAGE;
		}
		if (m == 1)
			continue;
		if (argv[i][0] == '-' || npos == 2) {
			fprintf(errf, "pan log-level: unexpected argument "
			              "'%s'\n" LOGLEVEL_USAGE,
			        argv[i]);
			return PAN_EXIT_USAGE;
		}
		pos[npos++] = argv[i];
	}
	if (strcmp(argv[1], "list") == 0) {
		if (npos != 0) {
			fprintf(errf, "pan log-level list: unexpected argument "
			              "'%s'\n" LOGLEVEL_USAGE,
			        pos[0]);
			return PAN_EXIT_USAGE;
		}
		return loglevel_list(p, node, out, errf);
	}
	if (npos != 2) {
		fprintf(errf, "pan log-level set: a category and a level\n"
		              LOGLEVEL_USAGE);
		return PAN_EXIT_USAGE;
	}
	return loglevel_set(p, pos[0], pos[1], node, out, errf);
}
