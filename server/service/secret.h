/* sealgate.v1.SecretService: write secrets (sealed before they leave the gateway), list their
 * metadata, delete them. No response ever carries a value. */
#ifndef SG_SERVICE_SECRET_H
#define SG_SERVICE_SECRET_H

#include "rpc/call.h"

extern const sg_service sg_secret_service;

#endif
