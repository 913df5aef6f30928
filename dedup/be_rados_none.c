/* Built when librados was not found: rados:// locations are refused. */
#include "backend.h"
#include "internal.h"

int dd_be_rados_open(const char *url, bool create, dd_backend **out)
{
    (void)create;
    *out = NULL;
    return vmt_error_set(VMT_EUNSUPPORTED,
                         "%s: this vmtree was built without librados (install librados-dev, "
                         "e.g. scripts/install-deps.sh --ceph, and rebuild)",
                         url);
}
