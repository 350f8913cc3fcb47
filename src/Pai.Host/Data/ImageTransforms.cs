namespace Pai.Host.Data;

/// <summary>A rectangle of a source image, in (fractional) pixels.</summary>
/// <param name="X">Left edge.</param>
/// <param name="Y">Top edge.</param>
/// <param name="Width">Width.</param>
/// <param name="Height">Height.</param>
public readonly record struct CropBox(double X, double Y, double Width, double Height);

/// <summary>
/// The ImageNet pipeline's per-image steps on <see cref="RgbImage"/>s, as torchvision defines
/// them: RandomResizedCrop (scale 0.08–1, aspect ratio 3/4–4/3, ten tries then a center crop)
/// with a random horizontal flip for training; Resize(256) of the shorter side then CenterCrop(224)
/// for evaluation. Both end in one antialiased bilinear resample of a source rectangle (PIL's
/// bilinear filter, whose support widens with the downscale factor), written straight into a
/// normalized CHW float buffer. Randomness comes from a <see cref="SampleRandom"/> per image.
/// </summary>
public static class ImageTransforms
{
    /// <summary>torchvision's RandomResizedCrop box: area fraction in [minScale, maxScale], log-uniform aspect ratio in [minRatio, maxRatio].</summary>
    /// <param name="width">Source width.</param>
    /// <param name="height">Source height.</param>
    /// <param name="random">Per-image random source.</param>
    /// <param name="minScale">Smallest area fraction (0.08).</param>
    /// <param name="maxScale">Largest area fraction (1).</param>
    /// <param name="minRatio">Smallest width/height ratio (3/4).</param>
    /// <param name="maxRatio">Largest width/height ratio (4/3).</param>
    public static CropBox RandomResizedCropBox(int width, int height, ref SampleRandom random,
        double minScale = 0.08, double maxScale = 1.0, double minRatio = 3.0 / 4.0, double maxRatio = 4.0 / 3.0)
    {
        double area = (double)width * height;
        double logMin = Math.Log(minRatio), logMax = Math.Log(maxRatio);
        for (var attempt = 0; attempt < 10; attempt++)
        {
            var target = area * random.Uniform(minScale, maxScale);
            var ratio = Math.Exp(random.Uniform(logMin, logMax));
            var w = (int)Math.Round(Math.Sqrt(target * ratio));
            var h = (int)Math.Round(Math.Sqrt(target / ratio));
            if (w > 0 && h > 0 && w <= width && h <= height)
            {
                var top = random.Below(height - h + 1);
                var left = random.Below(width - w + 1);
                return new CropBox(left, top, w, h);
            }
        }
        // Fallback: the whole image, cut to the nearest allowed ratio, centred.
        double inRatio = (double)width / height;
        int cw = width, ch = height;
        if (inRatio < minRatio) ch = (int)Math.Round(width / minRatio);
        else if (inRatio > maxRatio) cw = (int)Math.Round(height * maxRatio);
        return new CropBox((width - cw) / 2, (height - ch) / 2, cw, ch);
    }

    /// <summary>
    /// Resize(resize) of the shorter side then CenterCrop(crop), as one box of the source:
    /// the longer side resizes to ⌊resize·long/short⌋ and the crop starts at round((side − crop)/2).
    /// </summary>
    /// <param name="width">Source width.</param>
    /// <param name="height">Source height.</param>
    /// <param name="resize">Shorter side after resizing (256).</param>
    /// <param name="crop">Side of the center crop (224).</param>
    public static CropBox ResizeCenterCropBox(int width, int height, int resize, int crop)
    {
        int rw, rh;
        if (width <= height) (rw, rh) = (resize, (int)((long)resize * height / width));
        else (rw, rh) = ((int)((long)resize * width / height), resize);
        var left = Math.Round((rw - crop) / 2.0, MidpointRounding.ToEven);
        var top = Math.Round((rh - crop) / 2.0, MidpointRounding.ToEven);
        double sx = (double)width / rw, sy = (double)height / rh;
        return new CropBox(left * sx, top * sy, crop * sx, crop * sy);
    }

    /// <summary>
    /// Resamples <paramref name="box"/> of <paramref name="image"/> to outWidth × outHeight with
    /// antialiased bilinear weights, optionally mirrored, and writes (pixel/255 − mean)/std per
    /// channel into <paramref name="destination"/> as C×H×W floats. With mean 0 and std 1/255 the
    /// output is the plain 0–255 value.
    /// </summary>
    /// <param name="image">Source image.</param>
    /// <param name="box">Source rectangle (must lie inside the image).</param>
    /// <param name="outWidth">Output width.</param>
    /// <param name="outHeight">Output height.</param>
    /// <param name="flip">Mirror horizontally.</param>
    /// <param name="mean">Per-channel mean (3 values) of pixels scaled to [0, 1].</param>
    /// <param name="std">Per-channel standard deviation (3 values).</param>
    /// <param name="destination">3·outHeight·outWidth floats.</param>
    public static void ResampleNormalized(RgbImage image, CropBox box, int outWidth, int outHeight, bool flip,
        IReadOnlyList<double> mean, IReadOnlyList<double> std, Span<float> destination)
    {
        var plane = outWidth * outHeight;
        if (destination.Length < 3 * plane) throw new ArgumentException($"destination holds {destination.Length} floats, {3 * plane} needed", nameof(destination));
        var xs = Weights(box.X, box.Width, image.Width, outWidth);
        var ys = Weights(box.Y, box.Height, image.Height, outHeight);
        // Horizontal pass over the source rows the vertical pass reads.
        int rowLo = ys.Start.Min(), rowHi = ys.Start.Select((s, i) => s + ys.Count[i]).Max();
        var rows = rowHi - rowLo;
        var horizontal = new float[rows * outWidth * 3];
        var src = image.Pixels;
        for (var r = 0; r < rows; r++)
        {
            var rowOffset = (rowLo + r) * image.Width * 3;
            var o = r * outWidth * 3;
            for (var x = 0; x < outWidth; x++)
            {
                float a = 0, b = 0, c = 0;
                var start = xs.Start[x];
                var wOffset = x * xs.Stride;
                for (var k = 0; k < xs.Count[x]; k++)
                {
                    var w = xs.Values[wOffset + k];
                    var p = rowOffset + (start + k) * 3;
                    a += w * src[p];
                    b += w * src[p + 1];
                    c += w * src[p + 2];
                }
                var d = o + (flip ? outWidth - 1 - x : x) * 3;
                horizontal[d] = a;
                horizontal[d + 1] = b;
                horizontal[d + 2] = c;
            }
        }
        Span<float> scale = stackalloc float[3];
        Span<float> shift = stackalloc float[3];
        for (var ch = 0; ch < 3; ch++)
        {
            scale[ch] = (float)(1.0 / (255.0 * std[ch]));
            shift[ch] = (float)(mean[ch] / std[ch]);
        }
        for (var y = 0; y < outHeight; y++)
        {
            var start = ys.Start[y] - rowLo;
            var wOffset = y * ys.Stride;
            for (var x = 0; x < outWidth; x++)
            {
                float a = 0, b = 0, c = 0;
                for (var k = 0; k < ys.Count[y]; k++)
                {
                    var w = ys.Values[wOffset + k];
                    var p = ((start + k) * outWidth + x) * 3;
                    a += w * horizontal[p];
                    b += w * horizontal[p + 1];
                    c += w * horizontal[p + 2];
                }
                // Round and clamp to 0..255 as an 8-bit resize would, then normalize.
                var i = y * outWidth + x;
                destination[i] = Quantize(a) * scale[0] - shift[0];
                destination[plane + i] = Quantize(b) * scale[1] - shift[1];
                destination[2 * plane + i] = Quantize(c) * scale[2] - shift[2];
            }
        }
    }

    static float Quantize(float v) => v <= 0 ? 0 : v >= 255 ? 255 : MathF.Round(v);

    sealed record FilterWeights(int[] Start, int[] Count, float[] Values, int Stride);

    // PIL's bilinear (triangle) resampling weights for out pixels of a source span [origin, origin + length).
    static FilterWeights Weights(double origin, double length, int inSize, int outSize)
    {
        var scale = length / outSize;
        var filterScale = Math.Max(scale, 1.0);
        var support = filterScale; // the triangle filter has support 1, widened by the downscale factor
        var stride = (int)Math.Ceiling(support) * 2 + 1;
        var start = new int[outSize];
        var count = new int[outSize];
        var values = new float[outSize * stride];
        for (var o = 0; o < outSize; o++)
        {
            var center = origin + (o + 0.5) * scale;
            var lo = Math.Max((int)(center - support + 0.5), 0);
            var hi = Math.Min((int)(center + support + 0.5), inSize);
            var n = Math.Min(hi - lo, stride);
            double total = 0;
            for (var k = 0; k < n; k++)
            {
                var w = Math.Max(0.0, 1.0 - Math.Abs((lo + k - center + 0.5) / filterScale));
                values[o * stride + k] = (float)w;
                total += w;
            }
            if (total > 0)
                for (var k = 0; k < n; k++) values[o * stride + k] = (float)(values[o * stride + k] / total);
            start[o] = lo;
            count[o] = n;
        }
        return new FilterWeights(start, count, values, stride);
    }
}

/// <summary>
/// A small seeded generator (SplitMix64) for per-image augmentation: each image of each epoch gets
/// its own stream, derived from (seed, epoch, sample index), so the result does not depend on which
/// worker thread handles the image or in what order.
/// </summary>
public struct SampleRandom
{
    ulong state;

    /// <summary>The stream of sample <paramref name="sample"/> in <paramref name="epoch"/> under <paramref name="seed"/>.</summary>
    public SampleRandom(ulong seed, int epoch, long sample)
    {
        state = Seeds.Derive(Seeds.Derive(seed, Seeds.AugmentStream, (ulong)epoch), (ulong)sample);
    }

    /// <summary>The next 64 random bits.</summary>
    public ulong Next()
    {
        var z = state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>Uniform in [0, 1).</summary>
    public double NextDouble() => (Next() >> 11) * (1.0 / (1UL << 53));

    /// <summary>Uniform in [lo, hi).</summary>
    public double Uniform(double lo, double hi) => lo + (hi - lo) * NextDouble();

    /// <summary>Uniform integer in 0..n-1 (n ≥ 1).</summary>
    public int Below(int n) => (int)(NextDouble() * n);

    /// <summary>True with probability ½.</summary>
    public bool Coin() => (Next() >> 63) != 0;
}
