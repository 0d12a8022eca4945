#include "service/change.h"

#include <stdio.h>
#include <string.h>

void sg_change_record(sg_call *call, const char *org, sg_audit_decision what, const sg_change *c) {
  const char *path = sg_call_path(call), *method = strrchr(path, '/');
  char derived[SG_AUDIT_RESOURCE_MAX];
  const char *resource = c->resource;
  if (resource == NULL) {
    if (c->secret_name != NULL)
      snprintf(derived, sizeof(derived), "stores/%s/secrets/%s", c->store_id, c->secret_name);
    else if (c->store_id != NULL)
      snprintf(derived, sizeof(derived), "stores/%s", c->store_id);
    else
      snprintf(derived, sizeof(derived), "sandboxes/%s", c->sandbox_id);
    resource = derived;
  }
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
      .resource = resource,
  };
  sg_audit_record(&ev);
}
