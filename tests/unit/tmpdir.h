/*
 * tmpdir.h: one temporary directory per unit test program, made before the
 * first test and removed, with everything in it, after the last.  Use
 * tmpdir_setup / tmpdir_teardown as the cmocka group fixtures.
 */
#ifndef ISELAB_TEST_TMPDIR_H
#define ISELAB_TEST_TMPDIR_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

static char tmpdir[64];

static int
tmpdir_rm_entry(const char *path, const struct stat *st, int flag,
    struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int
tmpdir_setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/iselab-unit.XXXXXX");
	return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int
tmpdir_teardown(void **state)
{
	(void)state;
	return nftw(tmpdir, tmpdir_rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

#endif
