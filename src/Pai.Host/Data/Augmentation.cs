
namespace Pai.Host.Data;

/// <summary>
/// Batched image augmentation with tensor ops: random crop with zero padding and horizontal flip
/// (the CIFAR recipe: crop 32 with padding 4, flip with probability ½). Each sample gets its own
/// offsets and flip, and the whole batch is done with one pad and two gathers.
/// </summary>
public static class Augmentation
{
    /// <summary>
    /// Random crop (same size as the input, from the image padded by <paramref name="padding"/> zeros
    /// on every side) and random horizontal flip, per sample, drawn from <paramref name="generator"/>.
    /// </summary>
    /// <param name="images">[B, C, H, W], any dtype.</param>
    /// <param name="padding">Zero padding on each side; offsets are drawn from 0..2·padding.</param>
    /// <param name="flip">Whether to flip half of the samples (drawn per sample).</param>
    /// <param name="generator">Seeded source of the offsets and flips.</param>
    /// <returns>[B, C, H, W] in the input's dtype and device, in the current scope.</returns>
    public static Tensor RandomCropFlip(Tensor images, int padding, bool flip, Generator generator)
    {
        var b = images.Size(0);
        var device = images.Device;
        using var rows = Libtorch.RandInt(0, 2L * padding + 1, [b], generator, device: device);
        using var cols = Libtorch.RandInt(0, 2L * padding + 1, [b], generator, device: device);
        using var flips = flip ? Libtorch.RandInt(0, 2, [b], generator, device: device) : Libtorch.Zeros([b], DType.Int64, device);
        return CropFlip(images, padding, rows, cols, flips);
    }

    /// <summary>
    /// Crops each sample at the given offsets from the zero-padded images and flips the samples
    /// marked in <paramref name="flips"/>: out[b, c, i, j] = padded[b, c, rows[b] + i, cols[b] + j'],
    /// with j' = W-1-j when flipped, else j.
    /// </summary>
    /// <param name="images">[B, C, H, W].</param>
    /// <param name="padding">Zero padding on each side.</param>
    /// <param name="rows">int64 [B]: top offset in the padded image, 0..2·padding.</param>
    /// <param name="cols">int64 [B]: left offset in the padded image, 0..2·padding.</param>
    /// <param name="flips">int64 or bool [B]: non-zero flips the sample horizontally.</param>
    /// <returns>[B, C, H, W] in the input's dtype and device, in the current scope.</returns>
    public static Tensor CropFlip(Tensor images, int padding, Tensor rows, Tensor cols, Tensor flips)
    {
        if (images.Dim != 4) throw new ArgumentException($"images must be [B, C, H, W], got {images}", nameof(images));
        if (padding < 0) throw new ArgumentOutOfRangeException(nameof(padding), padding, "padding must be non-negative");
        var s = images.Shape;
        long b = s[0], c = s[1], h = s[2], w = s[3];
        var device = images.Device;
        using var padded = padding == 0 ? images.Alias() : images.Pad([padding, padding, padding, padding]);
        using var i = Libtorch.Arange(0, h, device: device);
        using var j = Libtorch.Arange(0, w, device: device);
        using var jr = j.Flip(0);
        using var r0 = rows.To(DType.Int64);
        using var c0 = cols.To(DType.Int64);
        using var fl = flips.Ne(0.0);
        // row index [B, H] and column index [B, W] into the padded image
        using var rv = r0.View(b, 1);
        using var rowIndex = rv + i;
        using var flv = fl.View(b, 1);
        using var jsel = Tensor.Where(flv, jr, j);
        using var cv = c0.View(b, 1);
        using var colIndex = cv + jsel;
        using var ri = rowIndex.View(b, 1, h, 1);
        using var riE = ri.Expand(b, c, h, w + 2L * padding);
        using var cropRows = padded.Gather(2, riE);
        using var ci = colIndex.View(b, 1, 1, w);
        using var ciE = ci.Expand(b, c, h, w);
        return cropRows.Gather(3, ciE);
    }
}
