/* The whole public libsluice API. */
#ifndef SLUICE_SLUICE_H
#define SLUICE_SLUICE_H
#include <sluice/error.h>
#include <sluice/image.h>
#include <sluice/disk.h>
#endif
