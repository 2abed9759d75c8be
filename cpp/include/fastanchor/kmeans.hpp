// fastanchor: k-means of box shapes (the whole fit). The engine lives in kmeans/ (docs/design.md
// maps it); this header includes the driver, which includes the rest.
#pragma once

#include "kmeans/driver.hpp"
#include "kmeans/chunk_state.hpp"
#include "kmeans/log_space.hpp"
