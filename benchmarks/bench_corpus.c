/* A memory image of real file pages for the restore and golden benchmarks
 * (bench.h: vmt_bench_fill_image). */
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "bench.h"

#define PAGE 4096u

typedef struct filler {
    uint8_t *img;
    uint64_t npages, next;
} filler;

/* Pages of one file; every fourth page of the image is zero. */
static void add_file(filler *f, const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return;
    while (f->next < f->npages) {
        if (f->next % 4 == 3) {
            memset(f->img + f->next++ * PAGE, 0, PAGE);
            continue;
        }
        if (fread(f->img + f->next * PAGE, 1, PAGE, fp) != PAGE)
            break;
        f->next++;
    }
    fclose(fp);
}

static void add_dir(filler *f, const char *dir, int depth)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[4096];
    if (!d)
        return;
    while (f->next < f->npages && (e = readdir(d)) != NULL) {
        struct stat sb;
        if (e->d_name[0] == '.' ||
            snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) >= (int)sizeof(path) ||
            lstat(path, &sb) != 0)
            continue;
        if (S_ISDIR(sb.st_mode) && depth > 0)
            add_dir(f, path, depth - 1);
        else if (S_ISREG(sb.st_mode) && sb.st_size >= (off_t)PAGE)
            add_file(f, path);
    }
    closedir(d);
}

int vmt_bench_fill_image(uint8_t *img, uint64_t npages, const char *dir)
{
    filler f = {.img = img, .npages = npages};
    for (uint64_t last = UINT64_MAX; f.next < npages && f.next != last;) {
        last = f.next;
        add_dir(&f, dir, 8);
    }
    if (f.next < npages) {
        fprintf(stderr, "vmtree-bench: cannot read enough of the corpus %s\n", dir);
        return -1;
    }
    return 0;
}
