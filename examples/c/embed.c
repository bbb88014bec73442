/* Embed images with dim-runtime from C: the representation Y of each image, one line per image.
 *
 *   embed MODEL IMAGE...     MODEL: an ONNX encoder (.onnx) or an engine blob (.blob)
 *                            IMAGE: binary PPM (P6, RGB) or PGM (P5, grey), 8-bit, any size
 *
 * Prints `IMAGE y0 y1 ...` (floats with 9 significant digits: exact for f32). Exit status 0 on
 * success; 1 with dim_last_error()'s message on stderr otherwise. Build (see README "C API"):
 *
 *   cc -O2 -I capi/include examples/c/embed.c $TARGET/release/libdim_runtime_c.a -lm -lpthread -ldl -o embed
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dim_runtime.h"

/* Skips whitespace and `#` comments in a PNM header. */
static void skip_space(FILE *f) {
    int c;
    while ((c = fgetc(f)) != EOF) {
        if (c == '#') {
            while ((c = fgetc(f)) != EOF && c != '\n') {
            }
        } else if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            ungetc(c, f);
            return;
        }
    }
}

/* Reads a binary PPM or PGM with maxval 255. Returns the pixels (free them) or NULL. */
static unsigned char *read_pnm(const char *path, size_t *width, size_t *height, size_t *channels) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return NULL;
    }
    char magic[3] = {0};
    unsigned long w = 0, h = 0, maxval = 0;
    unsigned char *pixels = NULL;
    if (fread(magic, 1, 2, f) != 2 || magic[0] != 'P' || (magic[1] != '6' && magic[1] != '5')) {
        fprintf(stderr, "%s: not a binary PPM (P6) or PGM (P5)\n", path);
        goto done;
    }
    skip_space(f);
    if (fscanf(f, "%lu", &w) != 1) goto bad;
    skip_space(f);
    if (fscanf(f, "%lu", &h) != 1) goto bad;
    skip_space(f);
    if (fscanf(f, "%lu", &maxval) != 1 || maxval != 255) goto bad;
    fgetc(f); /* the one whitespace byte before the pixels */
    if (w == 0 || h == 0 || w > 16384 || h > 16384) goto bad;
    *width = w;
    *height = h;
    *channels = magic[1] == '6' ? 3 : 1;
    size_t n = *width * *height * *channels;
    pixels = malloc(n);
    if (!pixels || fread(pixels, 1, n, f) != n) {
        free(pixels);
        pixels = NULL;
        goto bad;
    }
    goto done;
bad:
    fprintf(stderr, "%s: bad or truncated PNM header or pixels (8-bit only)\n", path);
done:
    fclose(f);
    return pixels;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL IMAGE...\n", argv[0]);
        return 2;
    }
    DimEncoder *encoder = NULL;
    if (dim_encoder_open_path(argv[1], &encoder) != DIM_OK) {
        fprintf(stderr, "%s\n", dim_last_error());
        return 1;
    }
    size_t dim = dim_encoder_dim(encoder);
    float *y = malloc(dim * sizeof(float));
    int status = 0;
    for (int i = 2; i < argc && status == 0; i++) {
        DimImage image;
        unsigned char *pixels = read_pnm(argv[i], &image.width, &image.height, &image.channels);
        if (!pixels) {
            status = 1;
            break;
        }
        image.pixels = pixels;
        if (dim_encoder_embed_images(encoder, &image, 1, y, dim) != DIM_OK) {
            fprintf(stderr, "%s: %s\n", argv[i], dim_last_error());
            status = 1;
        } else {
            printf("%s", argv[i]);
            for (size_t k = 0; k < dim; k++) printf(" %.9g", y[k]);
            printf("\n");
        }
        free(pixels);
    }
    free(y);
    dim_encoder_free(encoder);
    return status;
}
