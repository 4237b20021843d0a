// The grid emulator's scheduler (see emulator.h).
#include "emulator.h"

#include <ucontext.h>

#include <string>
#include <vector>

namespace sf_emu {
namespace {

enum State { RUNNABLE, AT_BLOCK, AT_WARP, DONE };

struct Fiber {
    ucontext_t ctx;
    State state = RUNNABLE;
};

// Stack bytes per emulated thread.
const size_t STACK = 64 * 1024;

struct Launch {
    dim3 grid, block, block_at;
    void (*kernel)(void*) = nullptr;
    void* args = nullptr;
    std::vector<Fiber> fibers;
    std::vector<char> stacks;
    std::vector<uint64_t> slots;
    unsigned current = 0;
    ucontext_t scheduler;
};

thread_local Launch* active = nullptr;
thread_local std::string failure;

void entry() {
    Launch* l = active;
    l->kernel(l->args);
    l->fibers[l->current].state = DONE;
    // Returning resumes `uc_link`, the scheduler.
}

void wait(State s) {
    Launch* l = active;
    Fiber& f = l->fibers[l->current];
    f.state = s;
    swapcontext(&f.ctx, &l->scheduler);
}

// Runs one block to its end; false (with `failure` set) if its threads deadlock.
bool run_block(Launch& l) {
    unsigned n = l.block.x * l.block.y * l.block.z;
    for (unsigned t = 0; t < n; t++) {
        Fiber& f = l.fibers[t];
        f.state = RUNNABLE;
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = &l.stacks[t * STACK];
        f.ctx.uc_stack.ss_size = STACK;
        f.ctx.uc_link = &l.scheduler;
        makecontext(&f.ctx, entry, 0);
    }
    unsigned warps = (n + 31) / 32;
    for (;;) {
        for (unsigned t = 0; t < n; t++) {
            if (l.fibers[t].state != RUNNABLE) continue;
            l.current = t;
            swapcontext(&l.scheduler, &l.fibers[t].ctx);
        }
        unsigned done = 0, at_block = 0;
        for (unsigned t = 0; t < n; t++) {
            done += l.fibers[t].state == DONE;
            at_block += l.fibers[t].state == AT_BLOCK;
        }
        if (done == n) return true;
        bool released = false;
        for (unsigned w = 0; w < warps; w++) {
            unsigned lo = w * 32, hi = lo + 32 < n ? lo + 32 : n, waiting = 0, finished = 0;
            for (unsigned t = lo; t < hi; t++) {
                waiting += l.fibers[t].state == AT_WARP;
                finished += l.fibers[t].state == DONE;
            }
            if (waiting == 0) continue;
            if (finished != 0) {
                failure = "warp shuffle with finished lanes in warp " + std::to_string(w);
                return false;
            }
            if (waiting == hi - lo) {
                for (unsigned t = lo; t < hi; t++) l.fibers[t].state = RUNNABLE;
                released = true;
            }
        }
        if (released) continue;
        if (at_block + done == n && done == 0) {
            for (unsigned t = 0; t < n; t++) l.fibers[t].state = RUNNABLE;
            continue;
        }
        failure = at_block != 0 && done != 0
                      ? "__syncthreads not reached by finished threads"
                      : "threads wait at different barriers";
        return false;
    }
}

}  // namespace

dim3 thread_idx() {
    Launch* l = active;
    unsigned t = l->current;
    return dim3(t % l->block.x, (t / l->block.x) % l->block.y, t / (l->block.x * l->block.y));
}
dim3 block_idx() { return active->block_at; }
dim3 block_dim() { return active->block; }
dim3 grid_dim() { return active->grid; }
unsigned lane() { return active->current % 32; }

void sync_block() { wait(AT_BLOCK); }

uint64_t warp_exchange(uint64_t bits, unsigned src) {
    Launch* l = active;
    unsigned me = l->current;
    unsigned base = me - me % 32;
    l->slots[me] = bits;
    wait(AT_WARP);
    uint64_t got = l->slots[base + src];
    // Nobody offers a new value before every lane has read this one.
    wait(AT_WARP);
    return got;
}

const char* launch(dim3 grid, dim3 block, void (*kernel)(void*), void* args) {
    Launch l;
    l.grid = grid;
    l.block = block;
    l.kernel = kernel;
    l.args = args;
    unsigned n = block.x * block.y * block.z;
    l.fibers.resize(n);
    l.stacks.resize((size_t)n * STACK);
    l.slots.resize(n + 32);
    Launch* outer = active;
    active = &l;
    const char* result = nullptr;
    for (unsigned z = 0; z < grid.z && !result; z++)
        for (unsigned y = 0; y < grid.y && !result; y++)
            for (unsigned x = 0; x < grid.x && !result; x++) {
                l.block_at = dim3(x, y, z);
                if (!run_block(l)) result = failure.c_str();
            }
    active = outer;
    return result;
}

}  // namespace sf_emu
