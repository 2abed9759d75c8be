// fastanchor: the anchor fitness (fitness/metrics.hpp), the search's tiled layout
// (fitness/tiles.hpp) and the mutation search (evolve.hpp).
#pragma once

#include "evolve.hpp"
#include "fitness/metrics.hpp"
#include "fitness/tiles.hpp"
