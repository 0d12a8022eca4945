#include "service/change.h"

#include <string.h>

void sg_change_record(sg_call *call, const char *org, sg_audit_decision what, const sg_change *c) {
  const char *path = sg_call_path(call), *method = strrchr(path, '/');
  sg_audit_event ev = {
      .org_id = org,
      .sandbox_id = c->sandbox_id,
      .store_id = c->store_id,
      .secret_name = c->secret_name,
      .secret_version = c->secret_version,
      .decision = what,
      .actor_key_id = sg_call_key_id(call),
      .actor = sg_call_key_prefix(call),
      .action = method != NULL ? method + 1 : path,
      .resource = c->resource,
  };
  sg_audit_record(&ev);
}
